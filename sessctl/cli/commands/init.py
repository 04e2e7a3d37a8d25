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
    from ..app import redact

    store = app.store(check=False)
    where = f"{app.settings.table!r} in {redact(app.settings.database_url)}"
    if store.create_table():
        app.say(f"created table {where}")
    else:
        app.say(f"table {where} already exists; nothing to do")
