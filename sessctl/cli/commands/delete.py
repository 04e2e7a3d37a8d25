"""`sessctl delete`: end sessions now."""

from __future__ import annotations

import click

from ..types import SessionKey, pass_app


@click.command()
@click.argument("keys", metavar="KEY...", nargs=-1, required=True, type=SessionKey())
@pass_app
def delete(app, keys):
    """End sessions now (log them out).

    Deletes each KEY that exists; exits 1 naming any that did not.

    \b
    Example:
      sessctl delete 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e 4hd8s0aq1mz6c3vr7xk9py2wtl5nbe0u
    """
    from ..app import where

    store = app.store()
    keys = list(dict.fromkeys(keys))
    missing = [key for key in keys if not store.delete(key)]
    deleted = len(keys) - len(missing)
    if deleted or not missing:
        app.say(f"deleted {deleted} session{'' if deleted == 1 else 's'} from {where(app.settings)}")
    if missing:
        raise click.ClickException(
            f"no session with key{'' if len(missing) == 1 else 's'} {', '.join(missing)} "
            "(already ended?); see the sessions with: sessctl list --all"
        )
