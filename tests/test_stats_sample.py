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
