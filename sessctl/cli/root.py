"""The ``sessctl`` group: the global options, the commands, and runtime errors as `Error: ...` lines."""

from __future__ import annotations

import errno
import importlib
from collections.abc import MutableMapping

import click

from sessctl import __version__

from .app import App, fail, one_line
from .types import FileName, FiniteSeconds, TableName

# The commands, in the order --help lists them: name -> (module of sessctl.cli.commands, attribute).
COMMANDS = {
    "init": ("init", "init"),
    "list": ("list", "list_"),
    "show": ("show", "show"),
    "decode": ("show", "decode"),
    "set-life": ("life", "set_life"),
    "till-browser-close": ("life", "till_browser_close"),
    "reset-life": ("life", "reset_life"),
    "delete": ("delete", "delete"),
    "purge": ("purge", "purge"),
    "stats": ("stats", "stats"),
    "users": ("users", "users"),
    "demo": ("demo", "demo"),
    "completion": ("completion", "completion"),
}


class _Commands(MutableMapping):
    """The group's commands, each module imported when its command is first looked up:
    `sessctl stats` loads the stats command alone (--help and completion load them all)."""

    def __init__(self) -> None:
        self._loaded: dict[str, click.Command | None] = dict.fromkeys(COMMANDS)

    def __getitem__(self, name: str) -> click.Command:
        command = self._loaded[name]
        if command is None:
            module, attribute = COMMANDS[name]
            command = self._loaded[name] = getattr(
                importlib.import_module(f"{__package__}.commands.{module}"), attribute)
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self):
        return iter(self._loaded)

    def __len__(self) -> int:
        return len(self._loaded)

    def copy(self) -> dict[str, click.Command]:
        return dict(self.items())


class SessctlGroup(click.Group):
    """Lists commands in the order they are added, and turns runtime errors into `Error: ...` lines."""

    def list_commands(self, ctx):
        return list(self.commands)

    def resolve_command(self, ctx, args):
        ctx.meta["sessctl.command_args"] = list(args)  # for the hint below
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            _hint_global_option(self, ctx, exc)
            exc.message = one_line(exc.message)
            raise
        except click.ClickException as exc:
            exc.message = one_line(exc.message)  # one line, and no secret, whoever wrote it
            raise
        except (click.exceptions.Exit, click.Abort, EOFError):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                _stdout_gone()
                raise click.exceptions.Exit(0) from None  # `sessctl list | head`: done, quietly
            raise fail(exc, getattr(ctx.obj, "debug", False)) from None
        except Exception as exc:
            raise fail(exc, getattr(ctx.obj, "debug", False)) from None


def _hint_global_option(group: click.Group, ctx: click.Context, exc: click.NoSuchOption) -> None:
    """``sessctl list --table x``: say that --table belongs before the command, and show the line."""
    options = {name: param for param in group.params if isinstance(param, click.Option)
               for name in (*param.opts, *param.secondary_opts)}
    param = options.get(exc.option_name)
    args = ctx.meta.get("sessctl.command_args") or []
    if param is None or not args:
        return
    import shlex

    moved, rest = [], []
    i = 1
    while i < len(args):
        word = args[i]
        if not moved and (word == exc.option_name or word.startswith(exc.option_name + "=")):
            moved.append(word)
            if word == exc.option_name and not param.is_flag and i + 1 < len(args):
                i += 1
                moved.append(args[i])
        else:
            rest.append(word)
        i += 1
    given = []  # the global options already given before the command, as they were given
    for other in group.params:
        value = ctx.params.get(other.name)
        if isinstance(other, click.Option) and value not in (None, False) and other.name != param.name:
            given += [other.opts[0]] if other.is_flag else [other.opts[0], str(value)]
    line = shlex.join(["sessctl", *given, *moved, args[0], *rest])
    exc.possibilities = None
    exc.message = (f"No such option for {args[0]}: {exc.option_name}. {exc.option_name} is a global option: "
                   f"put it before the command: {line}")


def _stdout_gone() -> None:
    """The reader of stdout went away: send the rest (and the final flush) nowhere."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test runner's buffer): nothing will flush to a pipe


@click.group(cls=SessctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="URL", help="Database URL. [env: SESSCTL_DB; default: sqlite:///sessions.db]")
@click.option("--table", type=TableName(), metavar="NAME", help="Session table. [env: SESSCTL_TABLE; default: django_session]")
@click.option(
    "--secret-key-file",
    type=FileName(),
    metavar="PATH",
    help="File holding the secret key on its first line, fallback keys on the next ones. "
    "[env: SESSCTL_SECRET_KEY_FILE, or the key itself in SESSCTL_SECRET_KEY; "
    "fallbacks: SESSCTL_SECRET_KEY_FALLBACKS, comma-separated or a JSON array]",
)
@click.option(
    "--config",
    type=FileName(),
    metavar="PATH",
    help="TOML config file; given here, it outranks the environment. "
    "[env: SESSCTL_CONFIG; default: ./sessctl.toml if present]",
)
@click.option(
    "--time-zone",
    metavar="NAME",
    help="The project's TIME_ZONE when it runs Django with USE_TZ = False: naive times in the table and "
    "in session deadlines are that zone's wall time. Leave unset for USE_TZ = True (naive times are UTC). "
    "[env: SESSCTL_TIME_ZONE]",
)
@click.option(
    "--django-settings",
    metavar="MODULE",
    help="Read the database, keys, SESSION_* settings, time zone and session table from this Django "
    "settings module (imported as manage.py does, from the current folder); implies --app django. "
    "Options and environment variables still win. [env: SESSCTL_DJANGO_SETTINGS]",
)
@click.option(
    "--app",
    "app_name",
    type=click.Choice(["sessctl", "django"]),
    help="The app that serves the table, so messages say what it will do. [env: SESSCTL_APP; default: "
    "sessctl, or django with --django-settings]",
)
@click.option(
    "--timeout",
    type=FiniteSeconds(maximum=86400),
    metavar="SECONDS",
    help="Longest any one database call may take: connecting, a statement, a lock wait, the "
    "server's answer. [env: SESSCTL_TIMEOUT; default: 60 here, 5 in the app]",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and the settings in use (never the secret).")
@click.option("-q", "--quiet", is_flag=True, help="Print no messages on stderr, only data and errors.")
@click.version_option(__version__, "-V", "--version", prog_name="sessctl", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx, db, table, secret_key_file, config, time_zone, django_settings, app_name, timeout, debug, quiet):
    """Inspect and maintain a server-side session table (Django's format).

    Settings come from these options, then a --config file, then environment
    variables, then the Django settings module if one is named, then a TOML
    file named by SESSCTL_CONFIG or ./sessctl.toml, then defaults; a line on
    stderr says when a variable and a file disagree.
    Global options go before the command. Data goes to stdout; messages and
    progress go to stderr.

    \b
    Exit codes:
      0  success
      1  the operation failed: no such session, database unreachable,
         missing table, missing or wrong secret key, bad data, bad config,
         a Django settings module that cannot be read (or no Django)
      2  bad usage: unknown command, option or argument, bad value

    \b
    Example:
      sessctl --db postgresql://app@db.internal/app list --expired
    """
    ctx.obj = App(ctx, db=db, table=table, secret_key_file=secret_key_file, config=config, debug=debug, quiet=quiet,
                  time_zone=time_zone, django_settings=django_settings, app=app_name, timeout=timeout)


cli.commands = _Commands()
