"""The `sessctl` command: inspect and maintain a session table.

Only click is imported at start-up; SQLAlchemy and rich are loaded by the
commands that need them, so `sessctl --help` and shell completion stay fast.
"""

from __future__ import annotations

import errno

import click

from sessctl import __version__

from . import commands
from .app import App, fail


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


for command in commands.ALL:
    cli.add_command(command)


@cli.command()
@click.option("--serve", is_flag=True, help="Leave the example app running for your own browser, until Ctrl-C.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    metavar="N",
    help="With --serve: the port on 127.0.0.1 (default: any free port).",
)
@click.option("--keep", is_flag=True, help="Keep the demo's temporary database and secret key, and say where.")
def demo(serve, port, keep):
    """Watch sessions live and die in an example app, narrated.

    Starts a small example app (sessctl.SessionMiddleware) on 127.0.0.1, on
    a fresh SQLite file in a temporary folder with a throwaway secret key
    (the global options are ignored; nothing else is touched). Simulated
    browsers log in ("remember me", "public computer"), comment, restart
    and log out over real HTTP, while the real commands show what an
    operator sees: list, stats, set-life, purge. Takes a few seconds.

    \b
    Example:
      sessctl demo
      sessctl demo --serve --port 8000
    """
    if port and not serve:
        raise click.UsageError("--port goes with --serve")
    from sessctl import demo as tour

    if serve:
        tour.serve(port=port, keep=keep)
    else:
        tour.tour(keep=keep)


def main() -> None:
    cli(prog_name="sessctl")
