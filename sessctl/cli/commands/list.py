"""`sessctl list`: the sessions, soonest to expire first."""

from __future__ import annotations

import contextlib

import click

from ..types import json_option, pass_app
from .users import UserId, list_user


@click.command("list")
@click.option("--active", "state", flag_value="active", default=True, help="Only live sessions (the default).")
@click.option("--expired", "state", flag_value="expired", help="Only expired sessions.")
@click.option("--all", "state", flag_value="all", help="Live and expired sessions.")
@click.option("--browser-close", is_flag=True, help="Only sessions that end when the browser closes.")
@click.option("--limit", type=click.IntRange(min=1, max=1_000_000_000), metavar="N", help="Show at most N sessions.")
@click.option("--user", type=UserId(), metavar="ID",
              help="Only the live sessions of this user, most recently active first, with last activity and device.")
@json_option
@click.option("--jsonl", is_flag=True, help="Print one JSON object per line (JSON Lines), for streams and logs.")
@pass_app
def list_(app, state, browser_close, limit, user, as_json, jsonl):
    """List sessions: key, expiry, lifetime kind, data size.

    Expiry is shown in UTC and relative to now, soonest first. Needs no
    secret key: the lifetime kind is read without verifying the signature
    ("unreadable" if the data cannot be decoded at all); a deadline that also
    carries an idle limit shows as absolute+idle. With --json, prints an
    array, streamed row by row; with --jsonl, one object per line. Each object
    has the session's "user".

    With --user ID, lists that user's live sessions instead (through the user
    index, or by decoding every session with the secret key on a table Django
    writes; stderr says which).

    \b
    Example:
      sessctl list --expired --limit 20
      sessctl list --all --json > sessions.json
      sessctl list --all --jsonl | grep browser_close
      sessctl list --user 42
    """
    from sessctl.policy import ends_with_browser
    from sessctl.reports import row_summary

    from ..render import json_array, json_lines, session_table

    if as_json and jsonl:
        raise click.UsageError("--json (an array) and --jsonl (one object per line) exclude each other; pick one")
    if user is not None:
        if state != "active" or browser_close:
            raise click.UsageError("--user lists live sessions only: not with --expired, --all or --browser-close")
        return list_user(app, user, limit, as_json, jsonl)
    store = app.store()
    app.journal_hint(store)
    now = store.now()

    def summaries():
        count = 0
        # Without a filter the SQL LIMIT ends the stream, so the store's cursor is read to its end.
        with contextlib.closing(store.iter_rows(state, now=now, limit=None if browser_close else limit)) as rows:
            for row in rows:
                item = row_summary(row, now, app.settings.user_key, read=app.read_lifetime)
                if browser_close and not ends_with_browser(item["lifetime"]["kind"], app.settings):
                    continue
                if limit is not None and count >= limit:
                    break
                yield item
                count += 1

    if jsonl:
        shown = json_lines(summaries())
    elif as_json:
        shown = json_array(summaries())
    else:
        shown = session_table(summaries(), now)
    if not shown:
        app.say(f"no {'' if state == 'all' else state + ' '}sessions")
