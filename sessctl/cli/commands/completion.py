"""`sessctl completion`: the shell completion script (completions/ holds the same files)."""

from __future__ import annotations

import os

import click
from click.shell_completion import BashComplete, add_completion_class, split_arg_string

SHELLS = ("bash", "zsh", "fish")

# Characters of bash's COMP_WORDBREAKS that split one argument into several words.
_BREAKS = frozenset(":=")


class URLAwareBashComplete(BashComplete):
    """Bash completion that sees ``--db sqlite:///x.db`` as one argument.

    Bash splits words at every character of ``COMP_WORDBREAKS`` (``:`` and ``=`` by default), so
    the command receives ``--db sqlite : ///x.db``: click then takes ``sqlite`` for the URL and
    ``:`` for the command, and no key completes. No argument of sessctl is a bare ``:`` or
    ``=``, so such a word is glued back to its neighbours before click reads the line.
    """

    def get_completion_args(self) -> tuple[list[str], str]:
        words = split_arg_string(os.environ["COMP_WORDS"])
        cword = int(os.environ["COMP_CWORD"])
        words += [""] * (cword + 1 - len(words))  # the word being typed may be empty
        merged: list[str] = []
        glue = False
        for index, word in enumerate(words):
            if word and set(word) <= _BREAKS and merged and index <= cword:
                merged[-1] += word
                glue = True
            elif glue and index <= cword:
                merged[-1] += word
                glue = False
            else:
                merged.append(word)
                glue = False
            if index == cword:
                break
        return merged[1:-1], merged[-1]


def register() -> None:
    """Use :class:`URLAwareBashComplete` for ``_SESSCTL_COMPLETE=bash_*``."""
    add_completion_class(URLAwareBashComplete, "bash")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell):
    """Print the completion script for bash, zsh or fish.

    Commands and options complete, and KEY arguments complete from the
    database the command line would use (--db, SESSCTL_DB or the config
    file). Save the script where your shell looks for completions, once per
    user; the wheel also installs them under share/ for system-wide use.

    \b
    Example:
      sessctl completion bash > ~/.local/share/bash-completion/completions/sessctl
      sessctl completion zsh > ~/.zfunc/_sessctl    # fpath=(~/.zfunc $fpath) before compinit
      sessctl completion fish > ~/.config/fish/completions/sessctl.fish
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root()
    script = get_completion_class(shell)(root.command, {}, root.info_name or "sessctl", "_SESSCTL_COMPLETE")
    click.echo(script.source(), nl=False)  # as `_SESSCTL_COMPLETE=<shell>_source sessctl` prints it
