"""`sessctl demo`: an example app, and a narrated tour of it."""

from __future__ import annotations

import click


@click.command()
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
    from ..demo import tour

    if serve:
        tour.serve(port=port, keep=keep)
    else:
        tour.tour(keep=keep)
