"""Every exception sessctl raises on purpose, in one place.

::

    ValueError
    ├── ConfigError            the configuration (file, environment, arguments) is invalid
    └── CodecError             ``session_data`` could not be decoded
        └── BadSignature       ... because no configured secret key signed it
    Exception
    └── StoreError             a database operation failed; the message says what to do
        ├── DatabaseUnavailable    the database cannot be reached
        ├── TableMissing           the session table (or the SQLite file) is not there
        ├── SessionGone            the row was deleted (or expired) while we worked on it
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


class StoreError(Exception):
    """A database operation failed; the message says what to do."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached."""


class TableMissing(StoreError):
    """The session table, or the SQLite database file, does not exist."""


class SessionGone(StoreError):
    """The session's row was deleted (or expired) while we were working on it."""


class Conflict(StoreError):
    """Too many concurrent writers: the compare-and-swap kept losing."""
