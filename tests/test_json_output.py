"""Every --json output is valid JSON for a strict parser (issue 11, item 14): session data that
Python's json module accepts (NaN, Infinity, lone surrogates, as Django's own serializer writes
them) is shown without bare NaN/Infinity tokens and without lone surrogates."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from click.testing import CliRunner

from conftest import SECRET
from sessctl.cli import cli
from sessctl.codec import Codec

pytestmark = pytest.mark.usefixtures("isolated")

HOSTILE = {
    "nan": float("nan"),
    "inf": float("inf"),
    "ninf": float("-inf"),
    "lone": "\ud800",
    "pair_broken": "a\udc00b",
    "nested": {"x": [float("nan"), "\udfff", {"\ud834": 1}]},
    "big": 10**400,
    "fine": "é ☃ 𝄞",
}


def _reject_constant(name):
    raise ValueError(f"bare {name} is not JSON")


def strict_loads(text: str):
    """Parse as a strict JSON parser would: no NaN/Infinity, every string valid Unicode."""
    value = json.loads(text, parse_constant=_reject_constant)

    def walk(v):
        if isinstance(v, str):
            v.encode("utf-8")  # a lone surrogate raises here
        elif isinstance(v, float):
            assert math.isfinite(v)
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(k)
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return value


def run(store, *args):
    s = store.settings
    return CliRunner().invoke(cli, ["--db", s.database_url, "--table", s.table, *args],
                              env={"SESSCTL_SECRET_KEY": SECRET})


@pytest.fixture
def hostile_row(store):
    encoded = Codec(SECRET).encode(HOSTILE)
    return store.create_row(encoded, store.now() + timedelta(hours=1)), encoded


def test_show_json_is_strict_json(store, hostile_row):
    key, _ = hostile_row
    r = run(store, "show", key, "--json")
    assert r.exit_code == 0, r.output
    shown = strict_loads(r.stdout)
    assert shown["data"]["fine"] == "é ☃ 𝄞"
    assert shown["data"]["big"] == 10**400
    assert set(shown["data"]) == set(HOSTILE)


def test_decode_json_is_strict_json(store, hostile_row):
    _, encoded = hostile_row
    for args in (["decode", encoded, "--json"], ["decode", encoded, "--json", "--no-verify"]):
        r = run(store, *args)
        assert r.exit_code == 0, r.output
        strict_loads(r.stdout)


def test_list_and_stats_json_are_strict_json(store, hostile_row):
    key, _ = hostile_row
    # A lifetime value that is itself out of range must not make list --json invalid either.
    codec = Codec(SECRET)
    store.create_row(codec.encode({"_session_expiry": 1e308}), store.now() + timedelta(hours=1))
    store.create_row(codec.encode({"_session_expiry": float("nan")}), store.now() + timedelta(hours=1))
    store.create_row(codec.encode({"_session_expiry": "9999-12-31T23:59:59+14:00"}), store.now() + timedelta(hours=1))
    for args in (["list", "--all", "--json"], ["stats", "--json"]):
        r = run(store, *args)
        assert r.exit_code == 0, r.output
        strict_loads(r.stdout)


def test_show_text_of_hostile_data_prints(store, hostile_row):
    key, _ = hostile_row
    r = run(store, "show", key)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
