"""`sessctl delete`: end sessions now."""

from __future__ import annotations

import click

from ..types import SessionKey, pass_app
from .users import UserId, delete_user


@click.command()
@click.argument("keys", metavar="[KEY...]", nargs=-1, type=SessionKey())
@click.option("--user", type=UserId(), metavar="ID", help="End every live session of this user (log them out everywhere).")
@click.option("--except", "keep", type=SessionKey(), metavar="KEY", multiple=True,
              help="With --user: keep this session (the device the user is on). Repeatable.")
@click.option("--dry-run", is_flag=True, help="With --user: print the keys that would be ended; end nothing.")
@pass_app
def delete(app, keys, user, keep, dry_run):
    """End sessions now: by KEY, or every session of a --user.

    Deletes each KEY that exists; exits 1 naming any that did not. With
    --user, ends every live session of that user but the --except KEYs, and
    exits 1 if there was none; says whether it found them through the user
    index or by decoding every session (a table Django writes: needs the
    secret key). A request of an ended session that is running meanwhile
    cannot bring it back.

    \b
    Example:
      sessctl delete 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e 4hd8s0aq1mz6c3vr7xk9py2wtl5nbe0u
      sessctl delete --user 42 --except 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e
    """
    from ..app import where

    if user is not None:
        if keys:
            raise click.UsageError("give either KEYs or --user, not both")
        return delete_user(app, user, keep, dry_run)
    if keep or dry_run:
        raise click.UsageError("--except and --dry-run go with --user")
    if not keys:
        raise click.UsageError("Missing argument 'KEY...' (or --user ID).")
    store = app.store()
    keys = list(dict.fromkeys(keys))
    missing = [key for key in keys if not store.delete(key)]
    app.forget(keys)  # cached_db: a key gone from the table may still be in Django's cache
    deleted = len(keys) - len(missing)
    if deleted or not missing:
        app.say(f"deleted {deleted} session{'' if deleted == 1 else 's'} from {where(app.settings)}")
    if missing:
        raise click.ClickException(
            f"no session with key{'' if len(missing) == 1 else 's'} {', '.join(missing)} "
            "(already ended?); see the sessions with: sessctl list --all"
        )
