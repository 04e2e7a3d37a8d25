"""The lifetime policy: one function decides expire_date and the cookie."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sessctl import Settings
from sessctl.policy import (
    ABSOLUTE,
    BROWSER_CLOSE,
    DEFAULT,
    EXPIRY_KEY,
    IDLE,
    MAX_LIFETIME,
    TILL_BROWSER_CLOSE,
    compute,
    format_seconds,
    lifetime_of,
    requested,
)

UTC = timezone.utc
NOW = datetime(2026, 11, 25, 12, 0, 0, 250000, tzinfo=UTC)
S = Settings()
S_CLOSE = Settings(expire_at_browser_close=True)


def test_default_is_cookie_age_and_persistent():
    exp = compute(S, {}, NOW)
    assert exp.expire_date == NOW + timedelta(seconds=1209600)
    assert exp.max_age == 1209600
    assert exp.expires == NOW + timedelta(seconds=1209600)
    assert exp.lifetime.kind == DEFAULT


def test_global_browser_close_keeps_a_server_side_cap():
    exp = compute(S_CLOSE, {}, NOW)
    assert exp.max_age is None and exp.expires is None
    assert exp.expire_date == NOW + timedelta(seconds=1209600)


@pytest.mark.parametrize("settings", [S, S_CLOSE])
def test_per_session_browser_close_overrides_global(settings):
    exp = compute(settings, {EXPIRY_KEY: 0}, NOW)
    assert exp.max_age is None
    assert exp.expire_date == NOW + timedelta(seconds=1209600)
    assert exp.lifetime.kind == BROWSER_CLOSE


@pytest.mark.parametrize("settings", [S, S_CLOSE])
def test_per_session_idle_overrides_global_browser_close(settings):
    exp = compute(settings, {EXPIRY_KEY: 600}, NOW)
    assert exp.max_age == 600
    assert exp.expire_date == NOW + timedelta(seconds=600)
    assert exp.lifetime.kind == IDLE


def test_absolute_deadline_is_fixed_and_floored_like_django():
    deadline = NOW + timedelta(hours=4, microseconds=500)
    exp = compute(S_CLOSE, {EXPIRY_KEY: deadline.isoformat()}, NOW)
    assert exp.expire_date == deadline
    assert exp.max_age == 14400
    later = compute(S, {EXPIRY_KEY: deadline.isoformat()}, NOW + timedelta(hours=1))
    assert later.expire_date == deadline  # saves never extend it
    assert later.max_age == 10800


def test_negative_idle_is_already_expired():
    exp = compute(S, {EXPIRY_KEY: -3600}, NOW)
    assert exp.expire_date < NOW
    assert exp.max_age == -3600


@pytest.mark.parametrize(
    "stored,kind",
    [
        (None, DEFAULT),
        (0, BROWSER_CLOSE),
        (False, BROWSER_CLOSE),  # Django's False == 0 quirk
        (10, IDLE),
        (1.5, IDLE),
        ("2026-11-25T16:28:16.016578+00:00", ABSOLUTE),
        ("2026-11-25T16:28:16", ABSOLUTE),  # naive: taken as UTC
        ("not a date", DEFAULT),
        ([1, 2], DEFAULT),
    ],
)
def test_reads_what_django_stores(stored, kind):
    data = {} if stored is None else {EXPIRY_KEY: stored}
    assert lifetime_of(data).kind == kind


def test_requested_values():
    assert requested(None).kind == DEFAULT
    assert requested(TILL_BROWSER_CLOSE).stored() == 0
    assert requested(3600, now=NOW).deadline == NOW + timedelta(hours=1)
    assert requested(timedelta(minutes=5), now=NOW).deadline == NOW + timedelta(minutes=5)
    assert requested(1800, idle=True).stored() == 1800
    assert requested(timedelta(minutes=30), idle=True).stored() == 1800
    when = NOW + timedelta(days=1)
    assert requested(when, now=NOW).stored() == when.isoformat()


@pytest.mark.parametrize("bad", [0, -1, -0.5, float("inf"), float("nan"), timedelta(0), NOW - timedelta(seconds=1)])
def test_requested_rejects_non_positive(bad):
    with pytest.raises(ValueError):
        requested(bad, now=NOW)


@pytest.mark.parametrize("bad", ["3600", True, [1]])
def test_requested_rejects_wrong_types(bad):
    with pytest.raises(TypeError):
        requested(bad, now=NOW)


def test_huge_durations_saturate_instead_of_crashing():
    exp = compute(S, {EXPIRY_KEY: 10**15}, NOW)
    # Clamped to 100 years: far from the end of every date type (issue 11, item 8).
    assert exp.expire_date == NOW + timedelta(seconds=MAX_LIFETIME)
    assert exp.max_age == MAX_LIFETIME


def test_format_seconds():
    assert format_seconds(90) == "1m30s"
    assert format_seconds(86400) == "1d"
    assert format_seconds(0) == "0s"
    assert format_seconds(-3600) == "-1h"


def test_idle_and_absolute_together_the_earlier_wins():
    both = requested(8 * 3600, idle=1800, now=NOW)
    data: dict = {}
    assert both.apply(data)
    assert data[EXPIRY_KEY] == (NOW + timedelta(hours=8)).isoformat()  # what Django sees: the hard cap
    assert lifetime_of(data) == both
    exp = compute(S, data, NOW)
    assert exp.expire_date == NOW + timedelta(seconds=1800) and exp.max_age == 1800
    late = NOW + timedelta(hours=7, minutes=50)
    exp = compute(S, data, late)
    assert exp.expire_date == NOW + timedelta(hours=8) and exp.max_age == 600
    assert both.to_json()["idle_seconds"] == 1800
    assert requested(None).apply(data) and data == {}


@pytest.mark.parametrize("bad", [0, -5, "x"])
def test_bad_idle_limit(bad):
    with pytest.raises((ValueError, TypeError)):
        requested(3600, idle=bad, now=NOW)
    with pytest.raises(ValueError):
        requested(TILL_BROWSER_CLOSE, idle=600)
