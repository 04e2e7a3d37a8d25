"""Sizes (issue 11, items 11 and 13): what is saved can be read back.

* The decode limit (JSON inflated from a compressed row) is the save limit: a session whose JSON
  is over it fails at save time with a clear error and writes nothing, so no row is ever saved
  that the next request reads as empty.
* A row over the limit written by another program (Django has no limit) is reported by show and
  decode as too large, not as "not written by Django or sessctl".
* On MariaDB a session over max_allowed_packet is a clear "too large" error, not "cannot reach
  the database", and the store keeps working after it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import zlib
from datetime import timedelta

import pytest
from click.testing import CliRunner

from conftest import SECRET
from httpserver import raw_get, routes_app, serve
from sessctl import SessionMiddleware
from sessctl.cli import cli
from sessctl.codec import MAX_DECOMPRESSED, Codec
from sessctl.session import Session
from sessctl.errors import DatabaseUnavailable, StoreError

pytestmark = pytest.mark.usefixtures("isolated")


def django_sign(payload_json: bytes, secret: str = SECRET) -> str:
    """Django's signed session format, written independently of sessctl's codec (zlib always)."""
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=")  # noqa: E731
    payload = b"." + b64(zlib.compress(payload_json))
    signed = payload + b":1u7Pfj"
    key = hashlib.sha256(b"django.contrib.sessions.SessionStore" + b"signer" + secret.encode()).digest()
    return (signed + b":" + b64(hmac.digest(key, signed, "sha256"))).decode()


def blob_of(json_size: int) -> dict:
    """Compressible session data whose compact JSON is exactly ``json_size`` bytes."""
    overhead = len(json.dumps({"blob": ""}, separators=(",", ":")))
    return {"blob": "a" * (json_size - overhead)}


def test_over_the_limit_fails_at_save_and_writes_nothing(store):
    s = Session(store)
    s["user"] = 1
    key = s.save()
    before = store.get_row(key)
    s = Session(store, key)
    s.update(blob_of(MAX_DECOMPRESSED + 1))
    with pytest.raises(ValueError, match="too large") as info:
        s.save()
    assert str(MAX_DECOMPRESSED // (1024 * 1024)) in str(info.value)  # says what the limit is
    assert store.get_row(key) == before  # nothing written
    fresh = Session(store)
    fresh.update(blob_of(MAX_DECOMPRESSED + 1))
    with pytest.raises(ValueError, match="too large"):
        fresh.save()
    assert len(list(store.iter_rows("all"))) == 1


def test_at_the_limit_saves_and_reads_back(store):
    s = Session(store)
    s.update(blob_of(MAX_DECOMPRESSED))
    key = s.save()
    assert len(Session(store, key)["blob"]) == len(blob_of(MAX_DECOMPRESSED)["blob"])


def test_over_the_limit_over_http_is_a_500_and_the_old_session_survives(store):
    def grow(session, environ):
        session.update(blob_of(MAX_DECOMPRESSED + 10))

    def login(session, environ):
        session["user"] = 1

    def me(session, environ):
        return {"user": session.get("user")}

    with serve(SessionMiddleware(routes_app({"/grow": grow, "/login": login, "/me": me}), store=store)) as server:
        r = raw_get(server, "/login")
        cookie = r.cookie().split(";")[0]
        assert raw_get(server, "/grow", cookie=cookie).status == 500
        assert [type(e).__name__ for e in server.errors] and "too large" in str(server.errors[0])
        assert raw_get(server, "/me", cookie=cookie).json() == {"user": 1}


def test_show_and_decode_name_a_too_large_row(store):
    value = django_sign(json.dumps(blob_of(MAX_DECOMPRESSED + 1), separators=(",", ":")).encode())
    assert len(value) < 1_000_000
    key = store.create_row(value, store.now() + timedelta(hours=1))
    s = store.settings
    for args in (["show", key], ["show", key, "--json"], ["show", key, "--no-verify"], ["decode", value]):
        r = CliRunner().invoke(cli, ["--db", s.database_url, "--table", s.table, *args],
                               env={"SESSCTL_SECRET_KEY": SECRET})
        assert r.exit_code == 1, r.output
        err = r.stderr.strip().splitlines()[-1]
        assert "too large" in err and "not written by Django" not in err, err
    # The runtime treats it as it treats any unreadable row: a new, empty session.
    assert Session(store, key).get("blob") is None


def test_the_size_limit_holds_for_the_command_line_rewrite_too(store):
    s = Session(store)
    s.update(blob_of(MAX_DECOMPRESSED - 10))
    key = s.save()
    settings = store.settings
    r = CliRunner().invoke(cli, ["--db", settings.database_url, "--table", settings.table, "set-life", key, "2h"],
                           env={"SESSCTL_SECRET_KEY": SECRET})
    # The rewrite adds a few bytes (the deadline): either it fits or it is refused, clearly.
    assert r.exit_code in (0, 1) and "unexpected" not in r.output, r.output
    row = store.get_row(key)
    Codec(SECRET).decode(row.session_data)  # whatever happened, the row still reads back


# -- MariaDB's max_allowed_packet ------------------------------------------------------


def _max_packet(store) -> int:
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT @@max_allowed_packet")).scalar())


def test_a_session_over_max_allowed_packet_is_too_large_not_unreachable(store, backend):
    if backend != "mysql":
        pytest.skip("MariaDB's max_allowed_packet")
    limit = _max_packet(store)
    if limit >= MAX_DECOMPRESSED:
        pytest.skip(f"max_allowed_packet is {limit}: above the session limit")
    s = Session(store)
    s["user"] = 1
    key = s.save()
    big = Session(store, key)
    big["blob"] = secrets.token_urlsafe(limit)  # incompressible, so the row is bigger than the packet
    with pytest.raises(StoreError) as info:
        big.save()
    assert not isinstance(info.value, DatabaseUnavailable), info.value
    assert "max_allowed_packet" in str(info.value) and "too large" in str(info.value), info.value
    # The store is fine afterwards: the same session reads and saves.
    again = Session(store, key)
    assert again["user"] == 1
    again["n"] = 1
    assert again.save() == key
    fresh = Session(store)
    fresh["blob"] = secrets.token_urlsafe(limit)
    with pytest.raises(StoreError, match="max_allowed_packet"):
        fresh.save()
