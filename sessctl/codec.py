"""Django's signed session format, both ways, without Django.

A stored ``session_data`` value is ``PAYLOAD:TS:SIG``:

* PAYLOAD: compact JSON of the session dict (ASCII, insertion order), zlib
  compressed when that saves at least two bytes (then prefixed with ``.``),
  URL-safe base64 without padding;
* TS: the signing time in base62 (not checked on decode, as in Django);
* SIG: HMAC-SHA256 of ``PAYLOAD:TS`` keyed with
  ``SHA256("django.contrib.sessions.SessionStore" + "signer" + secret)``,
  URL-safe base64 without padding.

JSON only: nothing here can execute data. Signatures are compared in constant
time, against the current key and then each fallback key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .errors import BadSignature, CodecError, PayloadTooLarge, SessionTooLarge

SALT = "django.contrib.sessions.SessionStore"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The most session JSON that is read back (decompressing unverified data must not be a zip
# bomb) and so the most that is ever written: a session saved is a session that loads.
MAX_DECOMPRESSED = 64 * 1024 * 1024
_MIB = MAX_DECOMPRESSED // (1024 * 1024)


def _b64encode(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64decode(text: str) -> bytes:
    # base64.urlsafe_b64decode (what Django calls) step for step, without its Python-level
    # wrappers: ASCII only, "-_" to "+/", then the lenient decoder. A third of a decode's time.
    try:
        return binascii.a2b_base64((text + "=" * (-len(text) % 4)).encode("ascii").translate(_FROM_URLSAFE))
    except (ValueError, TypeError) as exc:
        raise CodecError("payload is not valid URL-safe base64") from exc


def b62_encode(number: int) -> str:
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    number = abs(number)
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(_B62[rem])
    return sign + "".join(reversed(digits))


def b62_decode(text: str) -> int:
    if not text:
        raise CodecError("empty timestamp")
    sign = -1 if text[0] == "-" else 1
    number = 0
    for char in text.lstrip("-"):
        index = _B62.find(char)
        if index < 0:
            raise CodecError("timestamp is not base62")
        number = number * 62 + index
    return sign * number


def _hmac_key(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return hashlib.sha256(SALT.encode() + b"signer" + secret).digest()


def dumps_json(data: Mapping[str, Any]) -> bytes:
    """Serialise a session dict as Django's JSONSerializer does.

    A value JSON cannot hold raises ``TypeError`` naming its key.
    """
    try:
        return json.dumps(data, separators=(",", ":")).encode("latin-1")
    except (TypeError, ValueError, RecursionError):
        pass
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"session key {key!r} is not a string; session keys must be strings")
        try:
            json.dumps(value)
        except RecursionError:
            raise TypeError(f"session value for key {key!r} is nested too deeply for JSON") from None
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"session value for key {key!r} is not JSON serializable ({type(value).__name__}): {exc}"
            ) from None
    raise TypeError("session data is not JSON serializable")


def payload_json(value: str) -> bytes:
    """The JSON text inside a stored value, unverified and unparsed (a quick look before decoding)."""
    return _payload_bytes(_split(value)[0])


def _loads_payload(payload: str) -> dict[str, Any]:
    raw = _payload_bytes(payload)
    try:
        data = json.loads(raw.decode("latin-1"))
    except ValueError as exc:
        raise CodecError(f"payload is not valid JSON: {exc}") from exc
    except RecursionError:
        raise CodecError("payload is nested too deeply") from None
    if not isinstance(data, dict):
        raise CodecError(f"payload is a JSON {type(data).__name__}, not an object")
    return data


def _payload_bytes(payload: str) -> bytes:
    compressed = payload.startswith(".")
    raw = _b64decode(payload[1:] if compressed else payload)
    if compressed:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(raw, MAX_DECOMPRESSED + 1)
        except zlib.error as exc:
            raise CodecError("payload is not valid zlib data") from exc
        if len(raw) > MAX_DECOMPRESSED:
            raise PayloadTooLarge(f"it inflates to more than {_MIB} MiB of JSON, the most sessctl reads")
    return raw


def _split(value: str) -> tuple[str, str, str]:
    if not isinstance(value, str):
        raise CodecError("session data must be text")
    signed, sep, signature = value.rpartition(":")
    payload, sep2, timestamp = signed.rpartition(":")
    if not sep or not sep2 or not payload:
        if _looks_legacy(value):
            raise CodecError("legacy pre-Django-3.1 session format (HMAC-SHA1), which Django 4.0+ no longer reads")
        raise CodecError("not a signed session value (expected PAYLOAD:TIMESTAMP:SIGNATURE)")
    return payload, timestamp, signature


def _looks_legacy(value: str) -> bool:
    try:
        raw = base64.b64decode(value.strip(), validate=False)
    except (ValueError, TypeError):
        return False
    head = raw[:41]
    return len(head) == 41 and head[40:41] == b":" and all(c in b"0123456789abcdef" for c in head[:40])


class Codec:
    """Encode with the first secret key; decode with any of them."""

    __slots__ = ("_keys",)

    def __init__(self, secret_key: str | bytes, fallbacks: Iterable[str | bytes] = ()) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to sign session data")
        self._keys = tuple(_hmac_key(k) for k in (secret_key, *fallbacks) if k)

    def __repr__(self) -> str:  # never show key material
        return f"<Codec with {len(self._keys)} key(s)>"

    def _sign(self, message: bytes, key: bytes) -> bytes:
        return _b64encode(hmac.digest(key, message, "sha256"))

    def encode(self, data: Mapping[str, Any], *, timestamp: int | None = None) -> str:
        """Sign ``data``; :class:`SessionTooLarge` if its JSON is over what is ever read back."""
        raw = dumps_json(data)
        if len(raw) > MAX_DECOMPRESSED:
            raise SessionTooLarge(
                f"session data is too large: {len(raw):,} bytes of JSON, over the {_MIB} MiB that is read back "
                "(a saved session must load); keep large data out of the session"
            )
        compressed = zlib.compress(raw)
        if len(compressed) < len(raw) - 1:
            payload = b"." + _b64encode(compressed)
        else:
            payload = _b64encode(raw)
        ts = b62_encode(int(time.time()) if timestamp is None else timestamp)
        signed = payload + b":" + ts.encode()
        return (signed + b":" + self._sign(signed, self._keys[0])).decode("ascii")

    def verify(self, value: str) -> bool:
        """True if ``value``'s signature matches one of the keys (constant time per key)."""
        try:
            self._verified_payload(value)
        except CodecError:
            return False
        return True

    def _verified_payload(self, value: str) -> str:
        payload, timestamp, signature = _split(value)
        signed = f"{payload}:{timestamp}".encode("ascii", "replace")
        given = signature.encode("ascii", "replace")
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, self._sign(signed, key))
        if not ok:
            raise BadSignature("signature does not match the secret key (or any fallback key)")
        return payload

    def decode(self, value: str) -> dict[str, Any]:
        """Verify and decode; raises :class:`BadSignature` or :class:`CodecError`."""
        return _loads_payload(self._verified_payload(value))


def decode_unverified(value: str) -> dict[str, Any]:
    """Decode without checking the signature. Never trust the result."""
    payload, _timestamp, _signature = _split(value)
    return _loads_payload(payload)


def signed_at(value: str) -> int | None:
    """The signing time (Unix seconds) stamped in a value, or None if unreadable."""
    try:
        return b62_decode(_split(value)[1])
    except CodecError:
        return None


def from_settings(settings: Any) -> Codec | None:
    """The codec for ``settings``' secret key and fallbacks; None when no secret key is set."""
    if not settings.secret_key:
        return None
    return Codec(settings.secret_key, settings.secret_key_fallbacks)


class Inspection(NamedTuple):
    """What :func:`inspect` read from a stored value, for a person to look at."""

    data: dict[str, Any] | None  # None when it cannot be read (or is withheld: see ``error``)
    verified: bool
    signed_at: int | None
    error: CodecError | None  # why ``data`` is missing; a BadSignature when it had to verify


def inspect(codec: Codec | None, value: str, *, verify: bool) -> Inspection:
    """Decode ``value`` for an operator: verified when ``codec`` can, else unverified unless ``verify``.

    Never raises on bad input: ``error`` says why there is no data.
    """
    when = signed_at(value)
    try:
        if codec is not None:
            try:
                return Inspection(codec.decode(value), True, when, None)
            except BadSignature:
                if verify:
                    raise
        return Inspection(decode_unverified(value), False, when, None)
    except CodecError as exc:
        return Inspection(None, False, when, exc)
