"""The narrated tour (`sessctl demo`) and the app left running for a browser (`--serve`)."""

from __future__ import annotations

import contextlib
import signal
import sys
import time

import click

from .server import Browser, running


# -- the tour -----------------------------------------------------------------------------------


def _heading(text: str) -> None:
    click.echo()
    click.secho(text, bold=True)


def _say(who: str, action: str, page: str, note: str = "") -> None:
    click.echo(f"  {who:<8} {action:<26} {page}")
    if note:
        click.echo(f"  {'':<8} {'':<26} {note}")


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise click.ClickException(f"the demo did not go as expected: {what}")


def _log_in(browser: Browser, life: str) -> str:
    browser.get("/login")  # sets the test cookie
    return browser.post("/login", username=browser.name, life=life)


def tour(*, keep: bool = False) -> None:
    started = time.monotonic()
    with running(keep=keep, init=False) as demo:
        echo = click.echo
        click.secho("sessctl demo: sessions born, given lives, expiring and purged", bold=True)
        echo(f"  database  {demo.settings.database_url} (new; {'kept' if keep else 'removed at the end'})")
        echo(f"  secret    a throwaway key, generated for this run: {demo.folder / 'secret_key'}")
        echo(f"  app       {demo.url} (sessctl.SessionMiddleware around a small WSGI app)")
        echo(f"  operator  the real command line, as: {demo.command} ...")

        _heading("1. The operator creates the session table")
        echo("$ sessctl init")
        demo.sessctl("init")

        _heading("2. Browsers log in: GET /login sets a test cookie, POST /login checks it, then cycle_key()")
        alice, bob, carol = (Browser(name, demo.url) for name in ("alice", "bob", "carol"))
        dave = Browser("dave", demo.url, cookies=False)
        mallory = Browser("mallory", demo.url)
        _say("alice", "remember me", _log_in(alice, "remember"), "set_life(30 days): the cookie outlives the browser")
        _say("bob", "public computer", _log_in(bob, "public"), "set_life(TILL_BROWSER_CLOSE): a browser-session cookie")
        _say("carol", "(neither)", _log_in(carol, "default"), "the global policy: cookie_age, 14 days")
        _say("dave", "cookies turned off", _log_in(dave, "default"), "test_cookie_worked() was False")
        forged = "f0rgedbymall0ry" + "0" * 17
        page = mallory.get("/", cookie=f"sessionid={forged}")
        _say("mallory", "GET / with a forged id", page, f"she sent sessionid={forged}")
        _expect(page == "Not logged in.", "mallory's forged session id was accepted")

        _heading("3. Post a comment only once")
        _say("alice", "POST /comment", alice.post("/comment", comment="Hello"))
        _say("alice", "POST /comment again", alice.post("/comment", comment="Hello again"))
        page = mallory.post("/comment", comment="hi")
        key = mallory.session_key
        adopted = key == forged or demo.store.get_row(forged) is not None
        _expect(key is not None and not adopted, "mallory's forged session id was adopted")
        _say("mallory", "POST /comment", page, f"her forged id was not adopted: the server gave her {key}")

        _heading("4. What the operator sees")
        keys = {b.name: str(b.session_key) for b in (alice, bob, carol, mallory)}
        with contextlib.closing(demo.store.iter_rows("active")) as rows:
            keys.update(("dave", row.key) for row in rows if row.key not in keys.values())
        echo("$ sessctl list")
        demo.sessctl("list")
        for name, key in keys.items():
            echo(f"  {name:<8} {key}" + ("  (the test cookie his browser refused)" if name == "dave" else ""))
        echo("$ sessctl stats")
        demo.sessctl("stats")

        _heading("5. The operator gives carol's session 2 seconds")
        echo(f"$ sessctl set-life {keys['carol']} 2s")
        demo.sessctl("set-life", keys["carol"], "2s")
        echo("  ... 2.5 seconds later:")
        time.sleep(2.5)
        page = carol.get("/")
        _say("carol", "GET /", page, "logged out: her session expired on the server, whatever her cookie says")
        _expect(page == "Not logged in.", "carol's session outlived its 2 seconds")

        _heading("6. Browsers close and start again (jar.clear_session_cookies())")
        bob.restart()
        page = bob.get("/")
        _say("bob", "restarts, GET /", page, "logged out: his cookie ended with the browser")
        _expect(page == "Not logged in.", "bob's public-computer session survived his browser")
        alice.restart()
        page = alice.get("/")
        _say("alice", "restarts, GET /", page, "still logged in: remember me")
        _expect(page.startswith("Logged in as alice"), "alice's remember-me session did not survive her browser")
        page = alice.post("/comment", comment="Back again")
        _say("alice", "POST /comment", page, "her session's data came back too")

        _heading("7. Expired sessions are purged")
        echo("$ sessctl list --expired")
        demo.sessctl("list", "--expired")
        echo("$ sessctl purge --expired")
        demo.sessctl("purge", "--expired")
        _expect(demo.store.get_row(keys["carol"]) is None, "purge left carol's expired session")
        echo("  (bob's row stays until the server-side cap, cookie_age after its last save: his browser")
        echo("   forgot the cookie, so nobody can use it; purge removes it once it expires)")

        _heading("8. Logging out is flush(): the data and the row go, the cookie is deleted")
        page = alice.post("/logout")
        gone = demo.store.get_row(keys["alice"]) is None and alice.session_key is None
        _expect(gone, "alice's logout left her session behind")
        _say("alice", "POST /logout", page, "her row is gone, and her browser dropped the cookie")
        echo("$ sessctl list")
        demo.sessctl("list")

        _heading(f"Done in {time.monotonic() - started:.1f}s.")
        if keep:
            base = demo.command
            echo(f"The database is kept in {demo.folder}; look around:")
            for command in ("list --all", f"show {keys['bob']}", "stats", "purge --all --yes"):
                echo(f"  {base} {command}")
            echo(f"  rm -r {demo.folder}")
        echo("Try next:")
        echo("  sessctl demo --serve    the same app, for your own browser (Ctrl-C stops it)")
        if not keep:
            echo("  sessctl demo --keep     keep the database, to look around with the commands")
        echo("  sessctl --help          every command; README.md: sessctl in your own app")


def serve(*, port: int = 0, keep: bool = False) -> None:
    """The example app for a person's browser, until Ctrl-C (or a kill)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops it as Ctrl-C does, cleaning up
    try:
        with running(port=port, keep=keep, log=True) as demo:
            base = demo.command
            click.echo(f"sessctl demo: the example app is at {demo.url}  (Ctrl-C stops it)")
            click.echo(f"  database  {demo.settings.database_url} ({'kept' if keep else 'removed when it stops'})")
            click.echo("  in another terminal, watch and change your sessions:")
            for command in ("list", "stats", "set-life KEY 2s", "till-browser-close KEY", "purge --expired"):
                click.echo(f"    {base} {command}")
            sys.stdout.flush()
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
