"""`sessctl completion`: the shell completion script (completions/ holds the same files)."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


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
