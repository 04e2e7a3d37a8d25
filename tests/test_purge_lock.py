"""Overlapping purges (two cron runs at once): one holds the lock, the other is told."""

from __future__ import annotations

import threading
import time

from sessctl import SessionStore


def test_second_holder_is_refused_then_admitted(store):
    other = SessionStore(store.settings)
    try:
        with store.exclusive() as first:
            assert first is True
            with other.exclusive() as second:
                assert second is False
        with other.exclusive() as again:
            assert again is True
    finally:
        other.close()


def test_wait_blocks_until_released(store):
    other = SessionStore(store.settings)
    got_at = []
    try:
        with store.exclusive():
            def waiter():
                with other.exclusive(wait=True) as got:
                    got_at.append((got, time.monotonic()))

            thread = threading.Thread(target=waiter)
            thread.start()
            time.sleep(0.3)
            assert not got_at  # still waiting
            released = time.monotonic()
        thread.join(10)
        assert got_at and got_at[0][0] is True and got_at[0][1] >= released
    finally:
        other.close()


def test_locks_are_per_table(store, settings):
    other = SessionStore(settings.replace(table=settings.table + "_x"))
    try:
        with store.exclusive() as a, other.exclusive() as b:
            assert a and b
    finally:
        other.close()
