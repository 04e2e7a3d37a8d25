"""`stats` on a big table estimates kinds from a sample; --exact reads every row."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import insert

from sessctl.cli import cli


def test_big_tables_are_sampled_and_exact_is_exact(tmp_path):
    from sessctl import Settings, SessionStore

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = SessionStore(Settings(database_url=url, secret_key="k"))
    store.create_table()
    close, default = store.codec.encode({"_session_expiry": 0}), store.codec.encode({"u": 1})
    now = store.now()
    rows = [
        {"session_key": f"{i:032d}", "session_data": close if i % 4 == 0 else default,
         "expire_date": now + timedelta(hours=1 + i % 100)}
        for i in range(24_000)
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(store.table), rows)
    store.close()
    runner = CliRunner()
    sampled = json.loads(runner.invoke(cli, ["--db", url, "stats", "--json"], catch_exceptions=False).stdout)
    exact = json.loads(runner.invoke(cli, ["--db", url, "stats", "--exact", "--json"], catch_exceptions=False).stdout)
    assert sampled["sampled"] == 20_000 and exact["sampled"] is None
    assert exact["by_kind"]["browser_close"] == 6_000
    assert abs(sampled["by_kind"]["browser_close"] - 6_000) < 600
    assert abs(sum(sampled["by_kind"].values()) - 24_000) <= 5 and exact["active"] == 24_000


def test_the_samples_quick_read_counts_every_kind_as_a_full_decode_does():
    # The sample skips the JSON parse only where the expiry key cannot be: not where it is
    # nested, escaped, misspelt by one letter, or where the payload is no object at all.
    import base64
    import zlib

    from sessctl.codec import Codec
    from sessctl.reports import kinds_of

    codec = Codec("k")

    def raw(text: str, compress: bool = False) -> str:  # a value with any JSON text, signed or not
        body = zlib.compress(text.encode()) if compress else text.encode()
        payload = ("." if compress else "") + base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}:1abcde:sig"

    values = [
        codec.encode({"u": 1}), codec.encode({"u": "x" * 500}), codec.encode({"_session_expiry": 0}),
        codec.encode({"_session_expiry": 3600}), codec.encode({"_session_expiry": "2031-01-01T00:00:00+00:00"}),
        codec.encode({"_session_expiry": "2031-01-01T00:00:00+00:00", "_sessctl_idle": 60}),
        codec.encode({"nested": {"_session_expiry": 0}}), codec.encode({"note": "_session_expiry"}),
        raw('{"\\u005fsession_expiry": 0}'), raw('{"\\u005fsession_expiry": 0}', compress=True),
        raw('  {"_session_expiry": 0}  '), raw('[{"a": 1}]'), raw('"text"'), raw("{not json"),
        raw('{"_session_expirY": 0}'), raw("{}", compress=True), "no-separators", raw('{"a": "\\""}'),
        # JSON the full decode refuses though its syntax is valid, and whitespace JSON does not allow:
        raw('{"n": ' + "7" * 4301 + "}"), raw('{"a": ' + "[" * 1000 + "]" * 1000 + "}", compress=True),
        raw('\x0c{"a": 1}'), raw('{"a": 1}\x0b'), raw('\t{"a": 1}\r\n'),
    ]
    assert kinds_of(values, quick=True) == kinds_of(values)
    assert kinds_of(values)[0]["browser_close"] == 4  # plain, escaped twice, padded
