"""The codec against Django's published format (vectors made by real Django)."""

from __future__ import annotations

import base64
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessctl.codec import BadSignature, Codec, CodecError, b62_decode, b62_encode, decode_unverified, signed_at

TS = 1700000000
VECTOR = "eyJhIjoxLCJiIjoieCJ9:1r31eq:U9qqmYo8wbXAfda5O1LHyIk5fjcBZr_em_4Tft-9_pk"
COMPRESSED = ".eJyrVspQsopWSoQDJZ1RzsBwYmsBJkWBNw:1r31eq:gUBuhu5Z4lxIKFyHQZiaCn0uGSZJHsKxRCl1t9_yFjI"
LEGACY = "MGRhMGMwYjU4OTY5OTBhZDBkZWI5ZTQwY2EwOTA4ZWE3ODZhZjRkMzp7ImEiOjEsImIiOiJ4In0="


@pytest.fixture
def codec() -> Codec:
    return Codec("test-secret-1")


def test_encodes_djangos_vector_byte_for_byte(codec):
    assert codec.encode({"a": 1, "b": "x"}, timestamp=TS) == VECTOR


def test_compresses_exactly_when_django_does(codec):
    assert codec.encode({"h": ["aaaaaaaaaa"] * 30}, timestamp=TS) == COMPRESSED


def test_decodes_djangos_vectors(codec):
    assert codec.decode(VECTOR) == {"a": 1, "b": "x"}
    assert codec.decode(COMPRESSED) == {"h": ["aaaaaaaaaa"] * 30}


def test_timestamp_is_base62_signing_time(codec):
    assert b62_encode(TS) == "1r31eq"
    assert b62_decode("1r31eq") == TS
    assert signed_at(VECTOR) == TS
    assert b62_decode(b62_encode(-12345)) == -12345


def test_non_ascii_is_escaped_like_django(codec):
    value = codec.encode({"name": "Zoë 🎉"}, timestamp=TS)
    raw = base64.urlsafe_b64decode(value.split(":")[0] + "==")
    assert raw == b'{"name":"Zo\\u00eb \\ud83c\\udf89"}'
    assert codec.decode(value) == {"name": "Zoë 🎉"}


def test_wrong_key_is_a_bad_signature(codec):
    with pytest.raises(BadSignature):
        Codec("another-secret").decode(VECTOR)


def test_fallback_keys_decode_but_never_encode():
    rotated = Codec("new-secret", ["test-secret-1"])
    assert rotated.decode(VECTOR) == {"a": 1, "b": "x"}
    fresh = rotated.encode({"a": 1, "b": "x"}, timestamp=TS)
    assert fresh != VECTOR
    with pytest.raises(BadSignature):
        Codec("test-secret-1").decode(fresh)
    assert Codec("new-secret").decode(fresh) == {"a": 1, "b": "x"}


@pytest.mark.parametrize(
    "tampered",
    [
        VECTOR.replace("eyJhIjox", "eyJhIjoy"),  # payload changed
        VECTOR[:-1] + ("A" if VECTOR[-1] != "A" else "B"),  # signature changed
        VECTOR.replace(":1r31eq:", ":1r31er:"),  # timestamp changed
        VECTOR.rsplit(":", 1)[0] + ":",  # signature missing
    ],
)
def test_any_tampering_is_rejected(codec, tampered):
    with pytest.raises(BadSignature):
        codec.decode(tampered)


@pytest.mark.parametrize("garbage", ["", "abc", "bad:encoded:value", ":::", "é:é:é"])
def test_garbage_raises_the_codec_error_only(codec, garbage):
    with pytest.raises(CodecError):
        codec.decode(garbage)


def test_legacy_format_is_named(codec):
    with pytest.raises(CodecError, match="legacy"):
        codec.decode(LEGACY)


def test_signed_non_object_payload_is_rejected(codec):
    # Correctly signed, but not a JSON object: an error, never a crash later.
    payload = base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode()
    signed = f"{payload}:{b62_encode(TS)}"
    value = f"{signed}:{codec._sign(signed.encode(), codec._keys[0]).decode()}"
    with pytest.raises(CodecError, match="not an object"):
        codec.decode(value)


def test_non_json_value_names_its_key(codec):
    with pytest.raises(TypeError, match="'when'"):
        codec.encode({"ok": 1, "when": object()})
    with pytest.raises(TypeError, match="not a string"):
        codec.encode({1: "x", "y": object()})


def test_unverified_decode_ignores_the_signature():
    assert decode_unverified(VECTOR[:-3] + "xyz") == {"a": 1, "b": "x"}


def test_decompression_is_bounded():
    bomb = zlib.compress(b'{"a":"' + b"x" * (70 * 1024 * 1024) + b'"}')
    value = "." + base64.urlsafe_b64encode(bomb).rstrip(b"=").decode() + ":1r31eq:sig"
    with pytest.raises(CodecError, match="inflates"):
        decode_unverified(value)


def test_secret_never_in_repr():
    assert "test-secret-1" not in repr(Codec("test-secret-1"))


def test_signature_compare_is_constant_time(monkeypatch):
    import hmac as hmac_module

    calls = []
    real = hmac_module.compare_digest
    monkeypatch.setattr(hmac_module, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    Codec("k1", ["k2", "k3"]).verify(VECTOR)
    assert len(calls) == 3  # every key compared with compare_digest, none short-circuited


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=8))
def test_round_trip(data):
    codec = Codec("fuzz-secret")
    assert codec.decode(codec.encode(data)) == data


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
def test_arbitrary_input_raises_only_codec_errors(value):
    codec = Codec("fuzz-secret")
    with pytest.raises(CodecError):
        codec.decode(value)
    try:
        decode_unverified(value)
    except CodecError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="ABCxyz019-_+/=. \n\x00é"),
                 st.binary(max_size=64).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))))
def test_payload_base64_reads_exactly_what_the_standard_decoder_reads(text):
    # The codec's own decoder (no Python wrappers) against base64.urlsafe_b64decode, which Django calls.
    from sessctl.codec import _b64decode

    try:
        expected = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        with pytest.raises(CodecError):
            _b64decode(text)
    else:
        assert _b64decode(text) == expected
