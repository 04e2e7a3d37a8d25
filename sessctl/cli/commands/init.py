"""`sessctl init`: create the session table."""

from __future__ import annotations

import click

from ..types import pass_app


@click.command()
@pass_app
def init(app):
    """Create the session table and its index if missing.

    Idempotent: on an existing table (Django's own included) it changes nothing.

    \b
    Example:
      sessctl --db sqlite:///sessions.db init
    """
    from ..app import where

    store = app.store(check=False)
    if store.create_table():
        app.say(f"created {where(app.settings)}")
    else:
        app.say(f"{where(app.settings)} already exists; nothing to do")
