"""Every exception sessctl raises on purpose, in one place.

::

    ValueError
    ├── ConfigError            the configuration (file, environment, arguments) is invalid
    ├── SessionTooLarge        a session too large to save (it could not be read back)
    └── CodecError             ``session_data`` could not be decoded
        ├── BadSignature       ... because no configured secret key signed it
        └── PayloadTooLarge    ... because it inflates past what is ever read
    Exception
    └── StoreError             a database operation failed; the message says what to do
        ├── DatabaseUnavailable    the database cannot be reached
        ├── TableMissing           the session table (or the SQLite file) is not there
        ├── SessionGone            the row was deleted (or expired) while we worked on it
        │   └── SessionInterrupted     ... while a request ran: it answers 400, as Django does
        ├── RowTooLarge            the database refused a row that big (MariaDB's max_allowed_packet)
        └── Conflict               too many concurrent writers: the compare-and-swap kept losing

The modules that raise them re-export them under their old names
(``sessctl.config.ConfigError``, ``sessctl.codec.BadSignature``,
``sessctl.store.SessionGone``...).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """The configuration (file, environment or arguments) is invalid."""


class CodecError(ValueError):
    """``session_data`` could not be decoded (the one error the codec raises on input)."""


class BadSignature(CodecError):
    """The signature does not match any of the configured secret keys."""


class PayloadTooLarge(CodecError):
    """The stored data inflates past the most that is read (``codec.MAX_DECOMPRESSED``)."""


class SessionTooLarge(ValueError):
    """A session whose data is too large to save: it could not be read back."""


class StoreError(Exception):
    """A database operation failed; the message says what to do."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached."""


class TableMissing(StoreError):
    """The session table, or the SQLite database file, does not exist."""


class SessionGone(StoreError):
    """The session's row was deleted (or expired) while we were working on it."""


class SessionInterrupted(SessionGone):
    """A request's session ended (a login or logout in another request) before the request saved it.

    Django's middleware raises its own ``SessionInterrupted`` (a ``BadRequest``: HTTP 400) and
    leaves the cookie alone; every sessctl adapter answers the same way.
    """


class RowTooLarge(StoreError):
    """The database refused a statement that big (MariaDB's ``max_allowed_packet``)."""


class Conflict(StoreError):
    """Too many concurrent writers: the compare-and-swap kept losing."""
