"""The commands. Each is thin: the store, codec and policy modules do the work.

Runtime modules are imported inside each command, so importing this module
costs only click.
"""

from __future__ import annotations

import contextlib

import click

from .app import bad_signature
from .types import Duration, IdleDuration, SessionKey

pass_app = click.pass_obj
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (ISO-8601 UTC timestamps).")
no_verify_option = click.option(
    "--no-verify",
    is_flag=True,
    help="Show the data even if its signature does not verify (labelled unverified; never trust it).",
)


@click.command()
@pass_app
def init(app):
    """Create the session table and its index if missing.

    Idempotent: on an existing table (Django's own included) it changes nothing.

    \b
    Example:
      sessctl --db sqlite:///sessions.db init
    """
    from .app import redact

    store = app.store(check=False)
    where = f"{app.settings.table!r} in {redact(app.settings.database_url)}"
    if store.create_table():
        app.say(f"created table {where}")
    else:
        app.say(f"table {where} already exists; nothing to do")


@click.command("list")
@click.option("--active", "state", flag_value="active", default=True, help="Only live sessions (the default).")
@click.option("--expired", "state", flag_value="expired", help="Only expired sessions.")
@click.option("--all", "state", flag_value="all", help="Live and expired sessions.")
@click.option("--browser-close", is_flag=True, help="Only sessions that end when the browser closes.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N sessions.")
@json_option
@pass_app
def list_(app, state, browser_close, limit, as_json):
    """List sessions: key, expiry, lifetime kind, data size.

    Expiry is shown in UTC and relative to now, soonest first. Needs no
    secret key: the lifetime kind is read without verifying the signature
    ("unreadable" if the data cannot be decoded at all); a deadline that also
    carries an idle limit shows as absolute+idle. With --json, prints an
    array, streamed row by row.

    \b
    Example:
      sessctl list --expired --limit 20
      sessctl list --all --json > sessions.json
    """
    from . import render

    store = app.store()
    now = store.now()
    browser_default = app.settings.expire_at_browser_close

    def summaries():
        count = 0
        # Without a filter the SQL LIMIT ends the stream, so the store's cursor is read to its end.
        with contextlib.closing(store.iter_rows(state, now=now, limit=None if browser_close else limit)) as rows:
            for row in rows:
                item = render.row_summary(row, now)
                kind = item["lifetime"]["kind"]
                if browser_close and not (kind == "browser_close" or (kind == "default" and browser_default)):
                    continue
                if limit is not None and count >= limit:
                    break
                yield item
                count += 1

    if as_json:
        shown = render.json_array(summaries())
    else:
        shown = render.session_table(summaries(), now)
    if not shown:
        app.say(f"no {'' if state == 'all' else state + ' '}sessions")


@click.command()
@click.argument("key", type=SessionKey())
@json_option
@no_verify_option
@pass_app
def show(app, key, as_json, no_verify):
    """Show one session: expiry, lifetime, decoded data.

    Works on expired rows too (marked expired). Needs the app's secret key to
    verify the data, unless --no-verify.

    \b
    Example:
      sessctl show 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e
      sessctl show 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e --json | jq .data
    """
    from . import render

    codec = app.codec(None if no_verify else "show must verify the data's signature (or pass --no-verify)")
    store = app.store()
    row = store.get_row(key)
    if row is None:
        raise click.ClickException(f"no session with key {key}; see the sessions with: sessctl list --all")
    now = store.now()
    info = render.row_summary(row, now)
    decoded, problem = _decode(codec, row.session_data, verify=not no_verify)
    info.update(decoded)
    if decoded["data"] is not None:
        from sessctl.policy import lifetime_of

        info["lifetime"] = lifetime_of(decoded["data"]).to_json()
    if problem:
        info["error"] = problem
    if as_json:
        render.json_object(info)
    else:
        render.session_panel(info, now)
    if problem:
        raise click.ClickException(f"session {key}: {problem}")


@click.command()
@click.argument("value", metavar="[DATA | -]", default="-", required=False)
@json_option
@no_verify_option
@pass_app
def decode(app, value, as_json, no_verify):
    """Decode a raw session_data value.

    Reads DATA from the argument, or from stdin when it is "-" or absent.
    Needs no database; needs the secret key unless --no-verify.

    \b
    Example:
      sessctl decode 'eyJ1c2VyIjo0Mn0:1u7Pfj:Qk2...'
      psql -Atc "select session_data from django_session limit 1" | sessctl decode --json
    """
    from . import render

    codec = app.codec(None if no_verify else "decode must verify the data's signature (or pass --no-verify)")
    if value == "-":
        import sys

        value = sys.stdin.read()
    value = value.strip()
    if not value:
        raise click.UsageError("no data: give DATA as an argument or on stdin")
    decoded, problem = _decode(codec, value, verify=not no_verify)
    if problem:
        raise click.ClickException(problem)
    from sessctl.policy import lifetime_of

    info = {"lifetime": lifetime_of(decoded["data"]).to_json(), "size": len(value), **decoded}
    if as_json:
        render.json_object(info)
    else:
        render.session_panel(info, None)


def _decode(codec, value: str, *, verify: bool) -> tuple[dict, str | None]:
    """Decode ``value`` -> ({verified, signed_at, data}, problem or None); data is None when withheld."""
    from sessctl.codec import BadSignature, inspect

    from .render import iso_from_timestamp

    try:
        seen = inspect(codec, value, verify=verify)
    except BadSignature:
        seen, problem = None, "the " + bad_signature(
            ", list retired keys in SESSCTL_SECRET_KEY_FALLBACKS, or pass --no-verify to see the data unverified"
        )
    else:
        problem = None
        if seen.error is not None:
            problem = f"the data cannot be decoded ({seen.error}); it was not written by Django or sessctl"
    if seen is None:
        from sessctl.codec import signed_at

        out = {"verified": False, "signed_at": iso_from_timestamp(signed_at(value)), "data": None}
    else:
        out = {"verified": seen.verified, "signed_at": iso_from_timestamp(seen.signed_at), "data": seen.data}
    return out, problem


def _change_life(app, key: str, mutate, what: str) -> None:
    """Rewrite one session's lifetime in one compare-and-swap, and report the new expiry."""
    from sessctl import codec as codecs
    from sessctl.policy import format_seconds

    from .render import utc_text

    app.codec(f"{what} re-signs the session data")
    store = app.store()
    try:
        _data, expiry = store.update(key, mutate, resend=True)
    except codecs.BadSignature:
        raise click.ClickException(f"session {key}: the {bad_signature('; nothing was changed')}") from None
    except codecs.CodecError as exc:
        raise click.ClickException(
            f"session {key}: the data cannot be decoded ({exc}), so its lifetime cannot be changed; nothing was changed"
        ) from None
    left = format_seconds((expiry.expire_date - store.now()).total_seconds())
    app.say(
        f"session {key}: {expiry.lifetime.describe()}; the row now expires {utc_text(expiry.expire_date)} "
        f"(in {left}); the app re-sends its cookie on the next request"
    )


class _OptionalValueCommand(click.Command):
    """``--idle`` takes a value only when a duration follows it.

    click would give an optional-value option whatever word comes next, so
    ``set-life --idle KEY 30m`` (the bare flag first, as it always worked)
    would read KEY as the idle limit. A bare ``--idle`` followed by a word that
    is not a duration is passed on as ``--idle=`` (the bare flag) instead.
    """

    def parse_args(self, ctx, args):
        from .types import looks_like_duration

        fixed = list(args)
        for i, arg in enumerate(fixed):
            if arg == "--":
                break
            if arg == "--idle" and (i + 1 == len(fixed) or not looks_like_duration(fixed[i + 1])):
                fixed[i] = "--idle="
        return super().parse_args(ctx, fixed)


@click.command("set-life", cls=_OptionalValueCommand)
@click.argument("key", type=SessionKey())
@click.argument("duration", type=Duration(), required=False, metavar="DURATION")
@click.option(
    "--idle",
    type=IdleDuration(),
    is_flag=False,
    flag_value="",
    metavar="[LIMIT]",
    help="Alone: DURATION is an idle timeout (renewed at each save) instead of a fixed deadline. "
    "With a value (--idle 30m): an idle limit on top of the DURATION deadline; the earlier one wins.",
)
@pass_app
def set_life(app, key, duration, idle):
    """Give one session its own lifetime (now + DURATION).

    DURATION is seconds (3600) or units s, m, h, d, w (90m, 2h, 7d, 1h30m).
    With a bare --idle the session instead expires DURATION after its last
    save. With --idle LIMIT it has both limits: the deadline now + DURATION,
    and LIMIT after its last save; the earlier one wins. Rewrites the session
    data (re-signed: needs the secret key) and the row's expiry at once.
    Django reads such a session and sees only the deadline.

    \b
    Example:
      sessctl set-life 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e 2h
      sessctl set-life 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e 30m --idle
      sessctl set-life 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e 8h --idle 30m
    """
    from sessctl.policy import format_seconds, requested

    if duration is None:
        if idle is None or idle is True:
            raise click.UsageError("Missing argument 'DURATION'.")
        # `set-life KEY --idle 30m`: the value went to --idle; it is an idle timeout, as ever.
        duration, idle = idle, True
    if idle is None:
        idle = False
    if idle is not True and idle is not False and idle >= duration:
        app.say(
            f"note: the idle limit ({format_seconds(idle)}) is not shorter than the deadline "
            f"({format_seconds(duration)}), so only the deadline can matter"
        )

    def mutate(data):
        requested(duration, idle=idle).apply(data)

    _change_life(app, key, mutate, "set-life")


@click.command("till-browser-close")
@click.argument("key", type=SessionKey())
@pass_app
def till_browser_close(app, key):
    """Make one session end when the browser closes.

    The cookie loses its Max-Age; the server still drops the row after the
    default cookie age. Needs the secret key.

    \b
    Example:
      sessctl till-browser-close 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e
    """
    from sessctl.policy import TILL_BROWSER_CLOSE, requested

    def mutate(data):
        requested(TILL_BROWSER_CLOSE).apply(data)

    _change_life(app, key, mutate, "till-browser-close")


@click.command("reset-life")
@click.argument("key", type=SessionKey())
@pass_app
def reset_life(app, key):
    """Return one session to the global lifetime policy.

    Needs the secret key.

    \b
    Example:
      sessctl reset-life 9xk2m4qpz7w3ht5bn8cv6dl1rf0gsa2e
    """
    from sessctl.policy import requested

    def mutate(data):
        requested(None).apply(data)  # drops the deadline and any idle limit riding on it

    _change_life(app, key, mutate, "reset-life")


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
    store = app.store()
    keys = list(dict.fromkeys(keys))
    missing = [key for key in keys if not store.delete(key)]
    deleted = len(keys) - len(missing)
    if deleted or not missing:
        app.say(f"deleted {deleted} session{'' if deleted == 1 else 's'}")
    if missing:
        raise click.ClickException(
            f"no session with key{'' if len(missing) == 1 else 's'} {', '.join(missing)} "
            "(already ended?); see the sessions with: sessctl list --all"
        )


LOCKED = "another purge is running on this table; exiting"


@click.command()
@click.option("--expired", is_flag=True, help="Delete the expired sessions.")
@click.option("--all", "all_", is_flag=True, help="Delete every session (logs everyone out; needs --yes).")
@click.option("--yes", is_flag=True, help="Confirm --all.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Rows deleted per transaction.  [default: sized as it goes so that each batch stays short]",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Stop cleanly after about S seconds; re-run to go on.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="If another purge of this table is running, wait for it to end instead of exiting.",
)
@json_option
@pass_app
def purge(app, expired, all_, yes, dry_run, batch_size, max_seconds, wait, as_json):
    """Delete expired sessions in short batches.

    With --all --yes, delete every session instead.
    Safe while the app serves: each batch is its own short transaction that
    re-checks expiry, so a session renewed meanwhile survives. Purge may be
    killed at any moment, or stopped by --max-seconds (still exit 0), and
    simply run again. Prints a one-line summary on stderr, or one JSON object
    on stdout with --json.

    Only one purge of a table runs at a time (overlapping cron runs): a
    second one says so and exits 0 at once, or with --wait waits its turn.
    The lock is released when its holder ends, even by kill -9.

    \b
    Example:
      sessctl purge --expired
      17 * * * *  sessctl --quiet purge --expired --max-seconds 300
    """
    from . import render

    if expired == all_:
        raise click.UsageError("say what to purge: either --expired, or --all --yes")
    mode = "all" if all_ else "expired"
    if mode == "all" and not yes and not dry_run:
        raise click.UsageError("purge --all deletes every session and logs everyone out; add --yes to confirm")
    store = app.store()
    result = {"mode": mode, "dry_run": dry_run}
    if dry_run:
        cutoff = store.now()
        count = store.counts(cutoff)["total"] if mode == "all" else store.count_expired(cutoff)
        result.update(cutoff=render.iso(cutoff), deleted=0, would_delete=count, batches=0, seconds=0.0,
                      complete=True, remaining=count)
        message = f"would delete {render.plural(count, 'session')} (dry run: nothing deleted)"
    else:
        with contextlib.ExitStack() as stack:
            if not _purge_lock(app, store, stack, wait):
                result.update(deleted=0, batches=0, seconds=0.0, complete=False, remaining=None, skipped=LOCKED)
                if as_json:
                    render.json_object(result)
                app.say(LOCKED + ("" if wait else " (pass --wait to wait for it instead)"))
                return
            cutoff = store.now()  # taken once the lock is held: a waiting purge sees what the first one left
            result["cutoff"] = render.iso(cutoff)
            if mode == "all":
                count = store.delete_all()
                result.update(deleted=count, batches=1, seconds=0.0, complete=True, remaining=0)
                message = f"deleted all {render.plural(count, 'session')}"
            else:
                with render.purge_progress(app, store, cutoff) as on_batch:
                    done = store.purge_expired(
                        batch_size=batch_size, max_seconds=max_seconds, cutoff=cutoff, on_batch=on_batch
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
                    f"deleted {render.plural(done.deleted, 'expired session')} "
                    f"in {render.plural(done.batches, 'batch', 'batches')} ({done.seconds:.1f}s)"
                )
                if not done.complete:
                    message += f"; stopped after --max-seconds with {remaining} left: re-run to go on"
    if as_json:
        render.json_object(result)
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
        except OSError as exc:  # SQLite: the lock file beside the database cannot be made
            where = f" {exc.filename!r}" if exc.filename else ""
            raise click.ClickException(
                f"cannot open the purge lock file{where}: {exc.strerror or exc}; "
                "the database's folder must be writable"
            ) from None

    if take(False):
        return True
    if not wait:
        return False
    app.say("another purge is running on this table; waiting for it to end (--wait)")
    return take(True)


STATS_SAMPLE = 20_000


@click.command()
@click.option(
    "--exact",
    is_flag=True,
    help=f"Read every live session for the kind counts and histogram (default: above {STATS_SAMPLE:,} "
    "live sessions they are estimated from a random sample).",
)
@json_option
@pass_app
def stats(app, exact, as_json):
    """Count sessions by state, lifetime kind and expiry.

    Counts total, active and expired sessions, and those expiring within
    1 hour, 1 day and 7 days.
    Lifetime kinds are counted over active sessions, read without verifying
    signatures (no secret key needed); absolute_with_idle counts the
    deadlines that also carry an idle limit. Human output adds an expiry
    histogram. Above 20,000 live sessions the kinds and histogram are
    estimated from a random sample ("sampled" in JSON) unless --exact.

    \b
    Example:
      sessctl stats
      sessctl stats --json | jq .expiring
    """
    from . import render

    store = app.store()
    now = store.now()
    counts = store.counts(now)
    sampled = None
    if exact or counts["active"] <= STATS_SAMPLE:
        with contextlib.closing(store.iter_rows("active", now=now)) as rows:
            kinds, with_idle, histogram = render.active_breakdown(rows, now)
    else:
        # Keys are random, so a run of them is a fair sample: one range scan, not a table pass.
        sample = store.sample_rows(STATS_SAMPLE, now=now)
        kinds, with_idle, histogram = render.active_breakdown(sample, now)
        sampled = len(sample)
        scale = counts["active"] / max(sampled, 1)
        kinds = {k: round(n * scale) for k, n in kinds.items()}
        with_idle = round(with_idle * scale)
        for bucket in histogram:
            bucket["count"] = round(bucket["count"] * scale)
    report = {
        "total": counts["total"],
        "active": counts["active"],
        "expired": counts["expired"],
        "by_kind": kinds,
        "absolute_with_idle": with_idle,
        "expiring": {"1h": counts["expiring_1h"], "1d": counts["expiring_1d"], "7d": counts["expiring_7d"]},
        "histogram": histogram,
        "sampled": sampled,
        "at": render.iso(now),
    }
    if as_json:
        render.json_object(report)
    else:
        render.stats_report(report)


ALL = [init, list_, show, decode, set_life, till_browser_close, reset_life, delete, purge, stats]
