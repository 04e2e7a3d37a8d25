"""`sessctl show` and `sessctl decode`: one session, or one raw value, decoded."""

from __future__ import annotations

import click

from ..app import bad_signature
from ..types import SessionKey, json_option, no_verify_option, pass_app


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
    from sessctl.reports import row_summary

    from ..render import json_object, session_panel

    codec = app.codec(None if no_verify else "show must verify the data's signature (or pass --no-verify)")
    store = app.store()
    row = store.get_row(key)
    if row is None:
        raise click.ClickException(f"no session with key {key}; see the sessions with: sessctl list --all")
    now = store.now()
    info = row_summary(row, now, read=app.read_lifetime)
    if store.zone.naive:  # name the zone where the table holds wall times
        info["time_zone"] = store.zone.label
        info["stored_expire_date"] = str(store.zone.local(row.expire_date).replace(tzinfo=None))
    decoded, problem = _decode(codec, row.session_data, verify=not no_verify)
    info.update(decoded)
    if decoded["data"] is not None:
        info["lifetime"] = app.read_lifetime(decoded["data"])
    _add_user(info, store, key, decoded["data"], app.settings.user_key)
    if problem:
        info["error"] = problem
    if as_json:
        json_object(info)
    else:
        session_panel(info, now)
    if problem:
        raise click.ClickException(f"session {key}: {problem}")


def _add_user(info: dict, store, key: str, data, user_key: str) -> None:
    """`show`'s user (from the verified data) and, from the user index, last activity and device."""
    from sessctl.reports import iso
    from sessctl.userindex import user_of

    if data is not None:  # withheld (unverified) data shows no user either
        info["user"] = user_of(data, user_key)
    row = store.device_of(key)
    info["device"] = None
    if row is not None:
        info["last_activity"] = iso(row["last_seen"])
        if row["ip"] or row["user_agent"]:
            info["device"] = {"ip": row["ip"], "user_agent": row["user_agent"], "created_at": iso(row["created_at"])}


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
    from ..render import json_object, session_panel

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
    info = {"lifetime": app.read_lifetime(decoded["data"]), "size": len(value), **decoded}
    if as_json:
        json_object(info)
    else:
        session_panel(info, None)


def _decode(codec, value: str, *, verify: bool) -> tuple[dict, str | None]:
    """Decode ``value`` -> ({verified, signed_at, data}, problem or None); data is None when withheld."""
    from sessctl.codec import BadSignature, inspect
    from sessctl.errors import PayloadTooLarge

    from ..render import iso_from_timestamp

    seen = inspect(codec, value, verify=verify)
    out = {"verified": seen.verified, "signed_at": iso_from_timestamp(seen.signed_at), "data": seen.data}
    if isinstance(seen.error, BadSignature):
        return out, "the " + bad_signature(
            ", list retired keys in SESSCTL_SECRET_KEY_FALLBACKS, or pass --no-verify to see the data unverified"
        )
    if isinstance(seen.error, PayloadTooLarge):
        return out, f"the data is too large to show: {seen.error}"
    if seen.error is not None:
        return out, f"the data cannot be decoded ({seen.error}); it was not written by Django or sessctl"
    return out, None
