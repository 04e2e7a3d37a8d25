"""The ``sessctl`` group: the global options, the commands, and runtime errors as `Error: ...` lines."""

from __future__ import annotations

import errno

import click

from sessctl import __version__

from .app import App, fail
from .commands import delete, init, life, purge, show, stats
from .commands import demo as demo_command
from .commands import list as list_command


class SessctlGroup(click.Group):
    """Lists commands in the order they are added, and turns runtime errors into `Error: ...` lines."""

    def list_commands(self, ctx):
        return list(self.commands)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, EOFError):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # click exits quietly when the reader of stdout went away
            raise fail(exc, getattr(ctx.obj, "debug", False)) from None
        except Exception as exc:
            raise fail(exc, getattr(ctx.obj, "debug", False)) from None


@click.group(cls=SessctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="URL", help="Database URL. [env: SESSCTL_DB; default: sqlite:///sessions.db]")
@click.option("--table", metavar="NAME", help="Session table. [env: SESSCTL_TABLE; default: django_session]")
@click.option(
    "--secret-key-file",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="File holding the secret key on its first line, fallback keys on the next ones. "
    "[env: SESSCTL_SECRET_KEY_FILE, or the key itself in SESSCTL_SECRET_KEY; "
    "fallbacks: SESSCTL_SECRET_KEY_FALLBACKS, comma-separated]",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="TOML config file. [env: SESSCTL_CONFIG; default: ./sessctl.toml if present]",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and the settings in use (never the secret).")
@click.option("-q", "--quiet", is_flag=True, help="Print no messages on stderr, only data and errors.")
@click.version_option(__version__, "-V", "--version", prog_name="sessctl", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx, db, table, secret_key_file, config, debug, quiet):
    """Inspect and maintain a server-side session table (Django's format).

    Settings come from these options, then environment variables, then the
    TOML config file, then defaults. Data goes to stdout; messages and
    progress go to stderr.

    \b
    Exit codes:
      0  success
      1  the operation failed: no such session, database unreachable,
         missing table, missing or wrong secret key, bad data, bad config
      2  bad usage: unknown command, option or argument, bad value

    \b
    Example:
      sessctl --db postgresql://app@db.internal/app list --expired
    """
    ctx.obj = App(ctx, db=db, table=table, secret_key_file=secret_key_file, config=config, debug=debug, quiet=quiet)


for command in (
    init.init,
    list_command.list_,
    show.show,
    show.decode,
    life.set_life,
    life.till_browser_close,
    life.reset_life,
    delete.delete,
    purge.purge,
    stats.stats,
    demo_command.demo,
):
    cli.add_command(command)
