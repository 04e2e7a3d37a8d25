"""`set-life`, `till-browser-close`, `reset-life`: rewrite one session's lifetime in place."""

from __future__ import annotations

import click

from ..app import bad_signature
from ..types import Duration, IdleDuration, SessionKey, pass_app


def _change_life(app, key: str, mutate, what: str) -> None:
    """Rewrite one session's lifetime in one compare-and-swap, and report the new expiry."""
    from sessctl.errors import BadSignature, CodecError
    from sessctl.policy import format_seconds

    from ..app import where
    from ..render import utc_text

    app.codec(f"{what} re-signs the session data")
    store = app.store()
    try:
        # sessctl's runtime re-sends the cookie when it sees the marker; Django would keep it for good.
        _data, expiry = store.update(key, lambda data: mutate(data, store), resend=not app.django)
    except BadSignature:
        raise click.ClickException(f"session {key}: the {bad_signature('; nothing was changed')}") from None
    except CodecError as exc:
        raise click.ClickException(
            f"session {key}: the data cannot be decoded ({exc}), so its lifetime cannot be changed; nothing was changed"
        ) from None
    app.forget([key])  # cached_db: Django's next request reads the row, not its old cache entry
    left = format_seconds((expiry.expire_date - store.now()).total_seconds())
    said = f"session {key}: {expiry.lifetime.describe()}; the row now expires {utc_text(expiry.expire_date)} (in {left})"
    if not app.django:
        app.say(f"{said}; the app re-sends its cookie on the next request ({where(app.settings)})")
        return
    cookie = "the browser keeps its current cookie until a request modifies the session; Django then sends one " + (
        "that ends with the browser" if expiry.max_age is None else "that matches"
    )
    app.say(
        f"{said} ({where(app.settings)}); {cookie}. Note: a Django request already in flight may save over this change "
        "(Django saves without checking); only `sessctl delete` is a dependable forced logout"
    )


def _refusal(message: str) -> click.ClickException:
    """A usage refusal on one line (exit 2), without click's usage banner."""
    exc = click.ClickException(message)
    exc.exit_code = 2
    return exc


class _OptionalValueCommand(click.Command):
    """``--idle`` takes a value only when a duration follows it.

    click would give an optional-value option whatever word comes next, so
    ``set-life --idle KEY 30m`` (the bare flag first, as it always worked)
    would read KEY as the idle limit. A bare ``--idle`` followed by a word that
    is not a duration is passed on as ``--idle=`` (the bare flag) instead.
    """

    def parse_args(self, ctx, args):
        from ..types import looks_like_duration

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
    Django reads such a session and sees only the deadline; with --app django
    (or --django-settings) an idle limit beside a deadline is refused (exit 2).

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
    if idle is not True and idle is not False and app.django:
        raise _refusal(
            "Django keeps one lifetime per session, a deadline or an idle timeout, and its next save would drop "
            f"the idle limit: choose `set-life {key} {format_seconds(duration)}` (a deadline) or "
            f"`set-life {key} {format_seconds(idle)} --idle` (an idle timeout)"
        )
    if idle is not True and idle is not False and idle >= duration:
        app.say(
            f"note: the idle limit ({format_seconds(idle)}) is not shorter than the deadline "
            f"({format_seconds(duration)}), so only the deadline can matter"
        )

    def mutate(data, store):
        requested(duration, idle=idle, now=store.now(), zone=store.zone).apply(data, store.zone)

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

    def mutate(data, store):
        requested(TILL_BROWSER_CLOSE).apply(data, store.zone)

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

    def mutate(data, store):
        requested(None).apply(data, store.zone)  # drops the deadline and any idle limit riding on it

    _change_life(app, key, mutate, "reset-life")
