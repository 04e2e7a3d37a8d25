"""`sessctl purge`: delete expired (or all) sessions in short batches, one purge at a time."""

from __future__ import annotations

import contextlib

import click

from ..types import FiniteSeconds, json_option, pass_app


LOCKED = "another purge is running on this table; exiting"


@click.command()
@click.option("--expired", is_flag=True, help="Delete the expired sessions.")
@click.option("--all", "all_", is_flag=True, help="Delete every session (logs everyone out; needs --yes).")
@click.option("--yes", is_flag=True, help="Confirm --all.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=1_000_000),
    default=None,
    metavar="N",
    help="Rows deleted per transaction.  [default: sized as it goes so that each batch stays short]",
)
@click.option(
    "--max-seconds",
    type=FiniteSeconds(),
    metavar="S",
    help="Stop cleanly after about S seconds; re-run to go on.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="If another purge of this table is running, wait for it to end instead of exiting.",
)
@click.option(
    "--maintenance",
    is_flag=True,
    help="For a maintenance window: batches that hold their locks for seconds, on purpose "
    "(the app's writes wait that long; on SQLite every write does).",
)
@click.option(
    "--reclaim",
    is_flag=True,
    help="Then hand free space back where that is safe beside a live app: plain VACUUM on PostgreSQL, "
    "incremental vacuum on a SQLite file with auto_vacuum=INCREMENTAL; never VACUUM FULL.",
)
@json_option
@pass_app
def purge(app, expired, all_, yes, dry_run, batch_size, max_seconds, wait, maintenance, reclaim, as_json):
    """Delete expired sessions in short batches.

    With --all --yes, delete every session instead.
    Safe while the app serves: each batch is its own short transaction that
    re-checks expiry, so a session renewed meanwhile survives. Purge may be
    killed at any moment, or stopped by --max-seconds (still exit 0), and
    simply run again. Prints a one-line summary on stderr, or one JSON object
    on stdout with --json.

    Only one purge of a table runs at a time (overlapping cron runs): a
    second one says so and exits 0 at once, or with --wait waits its turn.
    The lock is released when its holder ends, even by kill -9. On SQLite it
    is a file beside the database or, where that folder is not writable, in
    $XDG_RUNTIME_DIR/sessctl (else /tmp/sessctl-UID); --json names it.

    `sessctl stats` shows the table's size and its dead or free space.

    \b
    Example:
      sessctl purge --expired
      17 * * * *  /srv/app/.venv/bin/sessctl --quiet purge --expired --max-seconds 300
      sessctl purge --expired --maintenance --reclaim      # a maintenance window
    """
    from sessctl.purge import MAINTENANCE_SECONDS
    from sessctl.reports import iso
    from sessctl.space import reclaim as reclaim_space

    from ..render import json_object, plural, purge_progress

    if expired == all_:
        raise click.UsageError("say what to purge: either --expired, or --all --yes")
    mode = "all" if all_ else "expired"
    if mode == "all" and not yes and not dry_run:
        raise click.UsageError("purge --all deletes every session and logs everyone out; add --yes to confirm")
    from ..app import database_label, where

    # --max-seconds is a promise: no one database call (connecting included) may take longer.
    store = app.store(timeout=max_seconds)
    app.journal_hint(store)
    result = {"mode": mode, "dry_run": dry_run, "database": database_label(app.settings.database_url),
              "table": app.settings.table}
    if maintenance:
        result["maintenance"] = True
    there = f"from {where(app.settings)}"
    if dry_run:
        cutoff = store.now()
        count = store.counts(cutoff)["total"] if mode == "all" else store.count_expired(cutoff)
        result.update(cutoff=iso(cutoff), deleted=0, would_delete=count, batches=0, seconds=0.0,
                      complete=True, remaining=count)
        message = f"would delete {plural(count, 'session')} {there} (dry run: nothing deleted)"
    else:
        with contextlib.ExitStack() as stack:
            got = _purge_lock(app, store, stack, wait)
            result["lock"] = _lock_note(app, store)
            if not got:
                result.update(deleted=0, batches=0, seconds=0.0, complete=False, remaining=None, skipped=LOCKED)
                if as_json:
                    json_object(result)
                app.say(LOCKED + ("" if wait else " (pass --wait to wait for it instead)"))
                return
            cutoff = store.now()  # taken once the lock is held: a waiting purge sees what the first one left
            result["cutoff"] = iso(cutoff)
            if app.caches_sessions:  # cached_db: Django would still serve these from its cache
                with contextlib.closing(store.iter_rows("all" if mode == "all" else "expired", now=cutoff)) as rows:
                    app.forget(row.key for row in rows)
            if mode == "all":
                count = store.delete_all()
                result.update(deleted=count, batches=1, seconds=0.0, complete=True, remaining=0)
                message = f"deleted all {plural(count, 'session')} {there}"
            else:
                if maintenance:
                    app.say(f"MAINTENANCE MODE: each batch holds its locks for about {MAINTENANCE_SECONDS:g} s "
                            f"on purpose; the app's writes {'all ' if store.dialect == 'sqlite' else ''}"
                            "wait that long", force=True)
                with purge_progress(app, store, cutoff) as on_batch:
                    done = store.purge_expired(
                        batch_size=batch_size, max_seconds=max_seconds, cutoff=cutoff, on_batch=on_batch,
                        maintenance=maintenance,
                    )
                remaining = 0 if done.complete else done.remaining
                result.update(
                    deleted=done.deleted,
                    batches=done.batches,
                    seconds=round(done.seconds, 3),
                    complete=done.complete,
                    remaining=remaining,
                )
                message = (
                    f"deleted {plural(done.deleted, 'expired session')} "
                    f"in {plural(done.batches, 'batch', 'batches')} ({done.seconds:.1f}s) {there}"
                )
                if done.stopped:
                    result["stopped"] = done.stopped
                    message += f"; stopped with {remaining} left: {done.stopped}"
                elif not done.complete:
                    message += f"; stopped after --max-seconds with {remaining} left: re-run to go on"
                if reclaim:
                    left = None if max_seconds is None else max(0.001, max_seconds - done.seconds)
                    result["reclaim"] = given = reclaim_space(store, left) if done.complete else {
                        "done": False, "how": None, "why": "the purge did not finish; re-run to go on"}
                    message += "; " + (f"space handed back ({given['how']})" if given["done"]
                                       else f"no space handed back: {given['why']}")
            if mode == "expired":
                import time

                from .. import lastrun

                lastrun.record(result["database"], result["table"], result, time.time())  # for stats' metrics
    if as_json:
        json_object(result)
    else:
        app.say(message)


def _purge_lock(app, store, stack: contextlib.ExitStack, wait: bool) -> bool:
    """Take this table's purge lock on ``stack``; False if another purge holds it and we do not wait."""

    def take(block: bool) -> bool:
        try:
            with contextlib.ExitStack() as attempt:
                got = attempt.enter_context(store.exclusive("purge", wait=block))
                if got:
                    stack.enter_context(attempt.pop_all())  # held until the purge ends
                return got  # not got: the attempt's connection is let go at once
        except OSError as exc:  # SQLite: no lock file beside the database nor in a folder of our own
            where = f" {exc.filename!r}" if exc.filename else ""
            raise click.ClickException(
                f"cannot open the purge lock file{where}: {exc.strerror or exc}; make the database's folder "
                "writable, or set XDG_RUNTIME_DIR to a folder of your own"
            ) from None

    if take(False):
        return True
    if not wait:
        return False
    app.say("another purge is running on this table; waiting for it to end (--wait)")
    return take(True)


def _lock_note(app, store) -> str | None:
    """Where the SQLite purge lock file is (None on a server: the lock is in the database); said
    once on stderr when it is not beside the database, whose folder this user cannot write."""
    import os

    lock = getattr(store, "lock_path", None)
    if lock is None:
        return None
    from sessctl.db import sqlite_path

    lock = os.path.abspath(lock)  # a relative database URL gives a relative lock path
    folder = os.path.dirname(os.path.abspath(sqlite_path(app.settings.database_url) or "."))
    if os.path.dirname(lock) != folder:
        app.say(f"note: the database's folder {folder} is not writable by this user; the purge lock is {lock}")
    return lock
