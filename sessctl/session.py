"""The per-request session: a lazy, dict-like view of one row.

Nothing touches the database until the session is used. Changes are written
only when the session was modified (a nested change needs
``session.modified = True``, as in Django), and a write never loses a
concurrent one: it compare-and-swaps on the row and, if another writer got
there first, re-applies only this request's own changes to the fresh copy.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import activity, policy
from .errors import CodecError, SessionGone, StoreError
from .policy import EXPIRY_KEY, RESEND_KEY, TILL_BROWSER_CLOSE
from .store import Row, new_key, valid_key
from .userindex import user_of
from .userlimit import CHANGED

if TYPE_CHECKING:
    from .store import SessionStore

TEST_COOKIE_NAME = "testcookie"
TEST_COOKIE_VALUE = "worked"
_MISSING = object()

__all__ = ["Session", "TILL_BROWSER_CLOSE"]


class Session(MutableMapping):
    """One client's session. Obtain it from ``environ["sessctl.session"]``."""

    def __init__(self, store: SessionStore, key: str | None = None) -> None:
        self._store = store
        # A client's key is only a candidate until a live, verified row backs it.
        self._key: str | None = key if valid_key(key) else None
        self._data: dict[str, Any] | None = None
        self._row: Row | None = None
        self._old_row: Row | None = None  # to delete once a cycled key is saved
        self._fresh_key = False  # True once cycle_key() drew a key of our own
        # With defer_deletes, flush() only notes the rows to delete; the
        # response (delete_pending) deletes them, e.g. off an event loop.
        self.defer_deletes = False
        self.pending_deletes: list[str] = []
        self.accessed = False
        self.modified = False
        self.expiry: policy.Expiry | None = None  # set by save()
        # Users: the user of the stored row, its "last seen" in the user index, the client (devices on).
        self._row_user: str | None = None
        self._seen: Any = None  # a datetime, None (no index row) or activity.LATER (not read yet)
        self.device_source: Any = None  # set by the adapter: () -> sessctl.devices.Device
        self.login_result: Any = None  # set by login()
        # login() with max_sessions_per_user saves at once: that row's key until its cookie is sent.
        self._unsent: str | None = None
        self._over = False  # the data was dropped on purpose (another user's session): never merged back
        self._users: dict[str, str | None] = {}  # row key -> its user, for rows this session has seen

    def __repr__(self) -> str:
        state = "loaded" if self._data is not None else "not loaded"
        return f"<Session {'new' if self._row is None else 'stored'}, {state}>"

    # -- loading -----------------------------------------------------------

    @property
    def session_key(self) -> str | None:
        """The session's key: None until a new session is saved.

        Reading it loads the session first, so a key a client merely sent is
        never reported as the session's (it could be an attacker's choice).
        """
        if self._data is None:
            self._session  # noqa: B018 - load (and verify) before answering
        return self._key

    @property
    def is_loaded(self) -> bool:
        return self._data is not None

    def preload(self) -> None:
        """Load now (one query if there is a key) without counting as an access."""
        if self._data is None:
            self._data = self._load()

    @property
    def _session(self) -> dict[str, Any]:
        self.accessed = True
        data = self._data
        if data is None:
            data = self._data = self._load()
        return data

    def _load(self) -> dict[str, Any]:
        key = self._key
        if key is None:
            return {}
        store = self._store
        row = store.load_row(key)
        if row is not None:
            try:
                data = store.codec.decode(row.session_data)
            except CodecError:
                data = None  # tampered, or signed with a key we no longer hold: never trusted
            if data is not None:
                self._row = row
                user = self._row_user = self._users[key] = user_of(data, store.settings.user_key)
                seen = row.last_seen
                if seen is None and user is not None and not store.seen_on_load and store.user_index_ready():
                    seen = activity.LATER  # read from the index only if the touch needs it
                self._seen = seen
                if data.pop(RESEND_KEY, None) is not None:
                    # The command line changed this session's lifetime: re-send the cookie.
                    self.modified = True
                return data
        self._key = None  # unknown, expired or untrusted: never adopt the client's key
        return {}

    # -- mapping -----------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._session[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._session[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._session[key]
        self.modified = True

    def __contains__(self, key: object) -> bool:
        return key in self._session

    def __iter__(self) -> Iterator[str]:
        return iter(self._session)

    def __len__(self) -> int:
        return len(self._session)

    def get(self, key: str, default: Any = None) -> Any:
        return self._session.get(key, default)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        data = self._session
        if key in data:
            self.modified = True
            return data.pop(key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def setdefault(self, key: str, default: Any = None) -> Any:
        data = self._session
        if key in data:
            return data[key]
        self.modified = True
        data[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._session.update(*args, **kwargs)
        self.modified = True

    def keys(self):
        return self._session.keys()

    def values(self):
        return self._session.values()

    def items(self):
        return self._session.items()

    def clear(self) -> None:
        self._session.clear()
        self.modified = True

    def is_empty(self) -> bool:
        """True when there is no data to keep (loads the session if needed)."""
        return not self._session

    # -- test cookie -------------------------------------------------------

    def set_test_cookie(self) -> None:
        self[TEST_COOKIE_NAME] = TEST_COOKIE_VALUE

    def test_cookie_worked(self) -> bool:
        return self.get(TEST_COOKIE_NAME) == TEST_COOKIE_VALUE

    def delete_test_cookie(self) -> None:
        self.pop(TEST_COOKIE_NAME, None)

    # -- users ----------------------------------------------------------------

    @property
    def user_id(self) -> str | None:
        """The logged-in user: the value under ``Settings.user_key`` (Django's ``_auth_user_id``), as text."""
        return user_of(self._session, self._store.settings.user_key)

    def login(self, user_id: Any) -> Any:
        """Log ``user_id`` in: a new key (always), the user recorded, ``max_sessions_per_user`` kept.

        Another user's session is emptied first, as Django does. Returns a
        :class:`~sessctl.users.LoginResult` (sessions evicted to stay within the
        limit, and why); with ``on_max_sessions = "refuse"`` raises
        :class:`~sessctl.users.SessionLimitReached` and changes nothing.
        """
        return activity.login(self, user_id)

    def end_other_sessions(self) -> list[str]:
        """Log this session's user out everywhere else ("log out my other devices"); the keys ended."""
        user = self.user_id
        if user is None:
            return []
        return list(self._store.end_user_sessions(user, keep=self.session_key or ()))

    def device(self) -> Any:
        """The client as device tracking records it, or None when tracking is off."""
        source = self.device_source
        if source is None or not self._store.settings.track_devices:
            return None
        return source()

    def touch(self) -> str | None:
        """Slide an unmodified session's deadline if a touch is due (see :mod:`sessctl.activity`)."""
        return activity.touch(self)

    def touch_due(self) -> bool:
        """Whether :meth:`touch` would write (no write; on SQLite it may read the index's "last seen")."""
        return activity.due(self) is not None

    @property
    def stored_key(self) -> str | None:
        """The key of the row this session holds now (None for a new or ended one); never loads."""
        return None if self._row is None else self._row.key

    def _forget(self) -> None:
        self._row = None
        self._key = None
        self._row_user = self._seen = None

    def _touched(self, expiry: policy.Expiry) -> None:
        row = self._row
        assert row is not None
        self._row = Row(row.key, row.session_data, expiry.expire_date)
        self.expiry = expiry

    # -- lifetime ------------------------------------------------------------

    def set_life(self, value: Any, *, idle: Any = False) -> None:
        """Give this session its own lifetime, overriding the global policy.

        * ``set_life(3600)`` / ``set_life(timedelta(hours=1))``: dies an hour from now, whatever happens;
        * ``set_life(datetime)``: dies at that instant;
        * ``set_life(1800, idle=True)``: dies after 30 minutes without a save (sliding);
        * ``set_life(8 * 3600, idle=1800)``: both limits, the earlier one wins;
        * ``set_life(TILL_BROWSER_CLOSE)``: its cookie ends with the browser;
        * ``set_life(None)``: back to the global policy.

        Zero or negative durations raise ``ValueError``.
        """
        store = self._store
        lifetime = policy.requested(value, idle=idle, now=store.now(), zone=store.zone)
        if lifetime.apply(self._session, store.zone):
            self.modified = True

    def set_expiry(self, value: Any) -> None:
        """Django's ``set_expiry``: int N = idle seconds, 0 = browser close, None = global."""
        if value is None:
            self.set_life(None)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            self.set_life(TILL_BROWSER_CLOSE)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self[EXPIRY_KEY] = value  # negative N is Django's way of ending a session now
        else:
            self.set_life(value)

    @property
    def lifetime(self) -> policy.Lifetime:
        return policy.lifetime_of(self._session, self._store.zone)

    def _expiry_now(self) -> policy.Expiry:
        return policy.compute(self._store.settings, self._session, self._store.now())

    def get_expiry_age(self) -> int:
        """Seconds the session has left if it were saved now (the cookie's Max-Age)."""
        exp = self._expiry_now()
        if exp.max_age is not None:
            return exp.max_age
        delta = exp.expire_date - self._store.now()
        return delta.days * 86400 + delta.seconds

    def get_expiry_date(self) -> datetime:
        """When the session would expire on the server if it were saved now (aware UTC)."""
        return policy.as_utc(self._expiry_now().expire_date)

    def get_expire_at_browser_close(self) -> bool:
        return self._expiry_now().max_age is None

    # -- key lifecycle ---------------------------------------------------------

    def cycle_key(self) -> None:
        """New key, same data (call on login). The old row goes when the new one is saved."""
        data = self._session
        if self._row is not None:
            self._old_row = self._row
        self._row = None
        self._key = new_key()
        self._fresh_key = True
        self.modified = True
        del data  # loaded: the data is carried over to the new key

    def flush(self) -> None:
        """Drop the data and the key, and delete the stored row (call on logout)."""
        self._data = {}
        self.accessed = self.modified = True
        doomed = [row.key for row in (self._row, self._old_row) if row is not None]
        if not doomed and self._key is not None and not self._fresh_key:
            doomed.append(self._key)  # a key never loaded: delete it blind
        self.pending_deletes.extend(doomed)
        if not self.defer_deletes:
            self.delete_pending()
        self._row = self._old_row = None
        self._key = None
        self._fresh_key = False

    # -- saving --------------------------------------------------------------

    def delete_pending(self) -> None:
        """Delete the rows a deferred ``flush()`` dropped."""
        while self.pending_deletes:
            key = self.pending_deletes.pop()
            self._store.delete_row(key, indexed=self._indexed(key))

    def _indexed(self, key: str) -> bool:
        """False only for a row known to have no user (so no user index row to delete with it)."""
        return self._users.get(key, "?") is not None

    def save(self) -> str | None:
        """Write the session; returns its key, or None if it was empty (and is now gone).

        Raises :class:`~sessctl.errors.SessionGone` if the row was deleted by
        someone else meanwhile: it is never re-created.
        """
        data = self._session
        store = self._store
        if not data:
            for row in (self._row, self._old_row):
                if row is not None:
                    store.delete_row(row.key, indexed=self._indexed(row.key))
            self._row = self._old_row = None
            self._key = None
            self._fresh_key = False
            return None
        if self._row is None:
            return self._create(data)
        return self._swap(data)

    def _create(self, data: dict[str, Any]) -> str:
        store = self._store
        user = user_of(data, store.settings.user_key)
        limited = activity.limited(self, user)
        if self._old_row is not None and not limited:
            data = self._retire_old_row(data)
        now = store.now()
        while True:
            exp = policy.compute(store.settings, data, now)
            encoded = store.codec.encode(data)
            side = activity.side_row(self, user, now) if user is not None else None
            if not limited:
                key = store.create_row(encoded, exp.expire_date, key=self._key if self._fresh_key else None, side=side)
                break
            assert side is not None
            found, outcome = activity.create_within_limit(self, encoded, exp.expire_date, side, now)
            if found is not None:
                key = found
                break
            # The row to retire changed (merge its changes, as _retire_old_row does) or is gone.
            old = self._old_row
            assert old is not None
            fresh = store.load_row(old.key, now) if outcome == CHANGED else None
            if fresh is None:
                self._old_row = self._row = None
                self._key = None
                self._fresh_key = False
                raise SessionGone(f"session {old.key} was deleted while this request ran")
            if not self._over:  # another user's data is never merged into this login's session
                data, _ = _rebased(store.codec, old, data, fresh)
            self._old_row = fresh
        self._old_row = None
        self._over = False
        self._data = data
        self._row_user, self._seen = user, (now if side is not None else None)
        if user is not None and side is not None:
            store.note_seen(key, now)
        self._users[key] = user
        self._key = key
        self._fresh_key = False
        self._row = Row(key, encoded, exp.expire_date)
        self.expiry = exp
        return key

    def _start_over(self, *, forget_row: bool = False) -> None:
        """Drop the data (not the row: the next save retires it), for a login on another user's
        session; with ``forget_row``, also forget the row (it is gone)."""
        self._data = {}
        self.accessed = self.modified = True
        self._over = True
        if forget_row:
            self._row = self._old_row = None
            self._key = None
            self._fresh_key = False

    def abandon_unsent(self) -> None:
        """The response failed after a login saved its row at once: delete that row, so that no
        session nobody holds counts against the user's limit (the browser never got its cookie)."""
        key, self._unsent = self._unsent, None
        if key is not None:
            try:
                self._store.delete_row(key)
            except StoreError:
                pass  # the response is failing already; the row expires like any other

    def _state(self) -> tuple:
        """What login() puts back when its save is refused (nothing was written)."""
        return (dict(self._session), self._row, self._old_row, self._key, self._fresh_key, self.modified,
                self.login_result, self._over)

    def _restore(self, state: tuple) -> None:
        data, self._row, self._old_row, self._key, self._fresh_key, self.modified, self.login_result, self._over = state
        self._data = data

    def _retire_old_row(self, data: dict[str, Any]) -> dict[str, Any]:
        """Delete the row cycle_key() left behind, by compare-and-swap (then under its lock).

        Changes another writer made to it meanwhile are carried over; if it
        was deleted meanwhile (logout elsewhere, admin, purge) the session
        ends here rather than living on under a new key. Deleting before the
        insert means a crash in between loses a session but never revives one.
        """
        old = self._old_row
        assert old is not None
        store = self._store
        if not store.delete_row(old.key, only_if=old, indexed=self._indexed(old.key)):
            # Lost the race: merge the other writer's changes and delete under the row's lock,
            # so this cannot lose again however many writers there are.
            merged = {"data": data}

            def retire(current: Row) -> tuple[None, None, list]:
                merged["data"], _ = _rebased(store.codec, old, data, current)
                return None, None, store._side_steps(old.key, ("drop",))

            if store.rewrite_row(old.key, retire) is None:
                self._old_row = self._row = None
                self._key = None
                self._fresh_key = False
                raise SessionGone(f"session {old.key} was deleted while this request ran")
            data = merged["data"]
        self._old_row = None
        self._data = data
        return data

    def _swap(self, data: dict[str, Any]) -> str:
        store = self._store
        row = self._row
        assert row is not None
        now = store.now()
        exp = policy.compute(store.settings, data, now)
        encoded = store.codec.encode(data)
        user = user_of(data, store.settings.user_key)
        side = activity.user_change(self, self._row_user, data, now, exp.lifetime, user)
        if store.swap_row(row, encoded, exp.expire_date, side=side):
            self._row = Row(row.key, encoded, exp.expire_date)
            self._data = data
            self.expiry = exp
            self._row_user = self._users[row.key] = user
            if side is not None:
                self._seen = now if self._row_user is not None else None
                if self._row_user is not None:
                    store.note_seen(row.key, now)
            return row.key
        # Lost the race: re-apply this request's changes under the row's lock (with the user
        # index row in the same transaction), so the retry cannot lose again however many
        # writers there are (issue 11, item 17).
        return self._swap_locked(row, data, now)

    def _swap_locked(self, row: Row, data: dict[str, Any], now: Any) -> str:
        store = self._store
        codec = store.codec
        merged: dict[str, Any] = {}

        def rewrite(current: Row) -> tuple[str, Any, list]:
            merged["data"], theirs = _rebased(codec, row, data, current)
            merged["exp"] = exp = policy.compute(store.settings, merged["data"], now)
            theirs_user = user_of(theirs, store.settings.user_key)
            merged["side"] = side = activity.user_change(self, theirs_user, merged["data"], now, exp.lifetime)
            return codec.encode(merged["data"]), exp.expire_date, store._side_steps(row.key, side)

        if self._seen is activity.LATER:  # read "last seen" now, not inside the row's lock
            self._seen = store.last_seen_of(row.key)
        done = store.rewrite_row(row.key, rewrite, now)
        if done is None:
            self._row = None
            self._key = None
            raise SessionGone(f"session {row.key} was deleted while this request ran")
        self._row = done[1]
        self._data = merged["data"]
        self.expiry = merged["exp"]
        self._row_user = self._users[row.key] = user_of(merged["data"], store.settings.user_key)
        if merged["side"] is not None:
            self._seen = now if self._row_user is not None else None
            if self._row_user is not None:
                store.note_seen(row.key, now)
        return row.key


def _rebased(codec: Any, base: Row, ours: dict[str, Any], current: Row) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our changes (made to ``base``) re-applied to ``current``, the row as another writer left it;
    and that writer's data."""
    try:
        theirs = codec.decode(current.session_data)
    except CodecError:
        theirs = {}  # unreadable: our copy is the best we have
    return _merge(codec.decode(base.session_data), ours, theirs), theirs


def _merge(original: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Re-apply our changes (relative to ``original``) on top of ``theirs``."""
    original.pop(RESEND_KEY, None)
    merged = dict(theirs)
    for key, value in ours.items():
        if key not in original or original[key] != value:
            merged[key] = value
    for key in original:
        if key not in ours:
            merged.pop(key, None)
    # The cookie this response sends is computed from the merged data, so it
    # already carries any lifetime another writer set: no re-send needed.
    merged.pop(RESEND_KEY, None)
    return merged
