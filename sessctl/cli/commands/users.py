"""`sessctl users`, and the user side of `list --user` and `delete --user`: operators think in users.

On a table with a user index (written by sessctl's runtime) a user's sessions
are found without reading anyone else's; on a table Django writes, every live
session is decoded with the secret key. Each command says which way it answered.
"""

from __future__ import annotations

import click

from ..types import json_option, pass_app


class UserId(click.ParamType):
    """A user id (the value under the app's user key); completes from the user index."""

    name = "user"

    def convert(self, value, param, ctx):
        text = str(value)  # as given: "alice " is another user than "alice"
        if not text.strip() or len(text) > 150:
            self.fail(f"{value!r} is not a user id (1 to 150 characters)", param, ctx)
        return text

    def shell_complete(self, ctx, param, incomplete):
        # Runs on every TAB: it must never print, raise or hang for long.
        try:
            from click.shell_completion import CompletionItem

            from ..types import completion_store

            with completion_store(ctx.find_root().params) as store:
                from sessctl.users import user_ids_with_prefix

                return [CompletionItem(u) for u in user_ids_with_prefix(store, incomplete)]
        except Exception:
            return []


def user_store(app, what: str):
    """The store of a user command, with the secret key loaded before the store is built (a table
    without a user index is answered by decoding every live session); without a key there, the
    error says so before anything is read."""
    from sessctl.users import use_index

    codec = app.codec()
    store = app.store()
    if codec is None and not use_index(store):
        app.codec(f"{what} on a table without a user index decodes every live session")
    return store


def how(found) -> str:
    return found.describe()


def user_item(session, now) -> dict:
    """What `list --user` shows of one session of a user (the `list --json` fields, plus user and device)."""
    from sessctl.reports import iso, row_summary

    item = row_summary(session, now)
    item["user"] = session.user_id
    seen = session.last_activity
    item["last_activity"] = None if seen is None else iso(seen)
    item["device"] = None
    if session.created_at is not None and (session.ip or session.user_agent):
        item["device"] = {"ip": session.ip, "user_agent": session.user_agent, "created_at": iso(session.created_at)}
    return item


def list_user(app, user: str, limit: int | None, as_json: bool, jsonl: bool = False) -> None:
    """`sessctl list --user ID`."""
    from ..render import json_array, json_lines
    from ..userrender import user_sessions_table

    store = user_store(app, "list --user")
    now = store.now()
    found = store.user_sessions(user)
    items = [user_item(s, now) for s in found[:limit]]
    shown = json_array(items) if as_json else json_lines(items) if jsonl else user_sessions_table(items, now)
    if not shown:
        app.say(f"no live session of user {user} (found {how(found)})")
    else:
        app.say(f"{shown} live session{'' if shown == 1 else 's'} of user {user} (found {how(found)})")


def delete_user(app, user: str, keep: tuple[str, ...], dry_run: bool) -> None:
    """`sessctl delete --user ID [--except KEY]... [--dry-run]`."""
    store = user_store(app, "delete --user")
    ended = store.end_user_sessions(user, keep=keep, dry_run=dry_run)
    where = f"found {how(ended)}"
    if dry_run:
        for key in ended:
            click.echo(key)
        app.say(f"would end {len(ended)} session{'' if len(ended) == 1 else 's'} of user {user} "
                f"(dry run: nothing deleted; {where})")
        return
    if not ended:
        kept = f" other than {', '.join(keep)}" if keep else ""
        raise click.ClickException(f"no live session of user {user}{kept} ({where}); see them with: sessctl users")
    from ..app import where as place

    app.say(f"ended {len(ended)} session{'' if len(ended) == 1 else 's'} of user {user} "
            f"in {place(app.settings)} ({where})")


@click.command()
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N users.")
@click.option("--rebuild-index", is_flag=True,
              help="Build the user index (or repair it) from the sessions themselves, then exit.")
@json_option
@pass_app
def users(app, limit, rebuild_index, as_json):
    """Users with live sessions, most first, with last activity.

    The user of a session is the value under the app's user key (Django's
    _auth_user_id unless the user_key setting says otherwise). With a user
    index (a table sessctl's runtime writes) this reads only the index;
    on a table Django writes it decodes every live session with the secret
    key. Says on stderr which way it answered.

    --rebuild-index creates the index of a table sessctl's runtime serves
    (one created before the index existed) or repairs it, decoding every
    live session once; the app may keep running. Not for a table Django
    serves (app = "django"): Django's logins would not keep it.

    \b
    Example:
      sessctl users --limit 10
      sessctl users --json | jq '.[0].user'
      sessctl users --rebuild-index
    """
    if rebuild_index:
        return rebuild(app, as_json)
    from sessctl.reports import iso

    from ..render import json_array
    from ..userrender import users_table

    store = user_store(app, "users")
    found = store.users(limit=limit)
    items = [
        {"user": u.user_id, "sessions": u.sessions, "last_activity": None if u.last_activity is None else iso(u.last_activity)}
        for u in found
    ]
    shown = json_array(items) if as_json else users_table(items, store.now())
    app.say(f"{'no' if not shown else shown} user{'' if shown == 1 else 's'} with live sessions (found {how(found)})")


def rebuild(app, as_json: bool) -> None:
    """`sessctl users --rebuild-index`."""
    from dataclasses import asdict

    from sessctl.userrebuild import rebuild as run

    app.codec("--rebuild-index decodes every live session")
    store = app.store()
    done = run(store, on_wait=lambda seconds: app.say(
        f"first pass done; waiting {seconds:.0f} s for running apps to notice the index, then a second pass "
        "indexes the logins they saved meanwhile"))
    if as_json:
        from ..render import json_object

        json_object(asdict(done))
    app.say(
        f"user index {'created' if done.created else 'checked'}: {done.scanned:,} live sessions read, "
        f"{done.indexed:,} with a user; {done.added:,} index rows written, {done.removed:,} removed"
    )
