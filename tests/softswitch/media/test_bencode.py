"""Bencode, the NG protocol's encoding: round trips, the canonical form, malformed input."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.media.bencode import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    BencodeError,
    Value,
    decode,
    encode,
    text,
)

# What decode returns: bytes for strings, str keys.
values: st.SearchStrategy[Value] = st.recursive(
    st.binary(max_size=40) | st.integers(min_value=-(10**30), max_value=10**30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_decode_inverts_encode(value: Value) -> None:
    assert decode(encode(value)) == value


@given(values)
def test_encoding_is_canonical(value: Value) -> None:
    data = encode(value)
    assert encode(decode(data)) == data


def test_known_encodings() -> None:
    assert encode({"command": "ping"}) == b"d7:command4:pinge"
    assert encode(b"") == b"0:"
    assert encode(0) == b"i0e"
    assert encode(-42) == b"i-42e"
    assert encode([]) == b"le"
    assert encode(("a", 1)) == b"l1:ai1ee"
    assert encode("é") == b"2:\xc3\xa9"  # str goes as UTF-8
    assert encode(bytearray(b"ab")) == b"2:ab"


def test_keys_are_sorted_by_their_bytes() -> None:
    assert encode({"b": 1, "a": 2, "B": 3}) == b"d1:Bi3e1:ai2e1:bi1ee"
    assert encode({b"z": 1, "y": 2}) == b"d1:yi2e1:zi1ee"  # type: ignore[arg-type]


def test_decode_gives_bytes_strings_and_str_keys() -> None:
    reply = decode(b"d6:result2:ok3:sdp5:v=0\r\n4:none0:e")
    assert reply == {"result": b"ok", "sdp": b"v=0\r\n", "none": b""}


def test_decode_accepts_unsorted_keys() -> None:
    # rtpengine does not promise sorted keys.
    assert decode(b"d1:bi1e1:ai2ee") == {"b": 1, "a": 2}


def test_sdp_that_is_not_utf8_survives() -> None:
    sdp = b"v=0\r\ns=\xff\xfe caf\xe9\r\n"
    assert decode(encode({"sdp": sdp})) == {"sdp": sdp}


def test_text_reads_a_key_as_str() -> None:
    reply = decode(b"d12:error-reason15:Unknown call-id3:numi7e4:listlee")
    assert isinstance(reply, dict)
    assert text(reply, "error-reason") == "Unknown call-id"
    assert text(reply, "num") == "7"
    assert text(reply, "missing") is None
    assert text(reply, "list", "x") == "x"
    assert text({"bad": b"\xff"}, "bad") == "\ufffd"


def test_depth_limit_is_inclusive() -> None:
    deepest: Any = []
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    assert decode(encode(deepest)) == deepest
    with pytest.raises(BencodeError, match="nested"):
        decode(b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1))
    with pytest.raises(BencodeError, match="nested"):
        encode([deepest])
    with pytest.raises(BencodeError, match="nested"):
        decode(b"d1:a" * (MAX_DEPTH + 1) + b"i0e" + b"e" * (MAX_DEPTH + 1))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"i", "without 'e'"),
        (b"i12", "without 'e'"),
        (b"ie", "not a decimal"),
        (b"i-e", "not a decimal"),
        (b"i-0e", "leading zero"),
        (b"i03e", "leading zero"),
        (b"i1.5e", "not a decimal"),
        (b"i+1e", "not a decimal"),
        (b"i 1e", "not a decimal"),
        (b"3:ab", "past the end"),
        (b"03:abc", "leading zero"),
        (b"-1:a", "unexpected byte"),
        (b"3abc", "without ':'"),
        (b"1:a1:b", "trailing"),
        (b"i1ee", "trailing"),
        (b"l", "truncated list"),
        (b"li1e", "truncated list"),
        (b"d", "truncated dictionary"),
        (b"d1:a", "truncated"),
        (b"di1ei2ee", "key is not a string"),
        (b"d1:ai1e1:ai2ee", "twice"),
        (b"d1:\xffi1ee", "not UTF-8"),
        (b"x", "unexpected byte"),
        (b"e", "unexpected byte"),
        (b"i" + b"9" * (MAX_INT_DIGITS + 1) + b"e", "without 'e'|longer"),
        (b"9" * (MAX_INT_DIGITS + 1) + b":", "without ':'|longer"),
        (b"99999999999:abc", "past the end"),
    ],
)
def test_malformed_input_is_a_bencode_error(data: bytes, reason: str) -> None:
    with pytest.raises(BencodeError, match=reason):
        decode(data)


def test_a_huge_integer_is_refused_not_a_crash() -> None:
    # CPython refuses int() of more than 4300 digits with a plain ValueError.
    with pytest.raises(BencodeError):
        decode(b"i" + b"1" * 5000 + b"e")
    with pytest.raises(BencodeError):
        encode(10**MAX_INT_DIGITS)


@given(st.binary(max_size=64))
def test_garbage_raises_only_bencode_error(data: bytes) -> None:
    with contextlib.suppress(BencodeError):
        decode(data)


@given(values, st.data())
def test_damaged_encodings_raise_only_bencode_error(value: Value, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    damaged = data.draw(
        st.sampled_from(
            [
                bytes(encoded[:cut]),  # truncated
                bytes(encoded) + b"e",  # trailing data
                bytes(encoded[:cut] + bytes([data.draw(st.integers(0, 255))]) + encoded[cut + 1 :]),
            ]
        )
    )
    with contextlib.suppress(BencodeError):
        decode(damaged)


@pytest.mark.parametrize("value", [True, 1.5, None, {1: 2}, object()])
def test_unencodable_values_are_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


def test_a_key_given_as_str_and_bytes_is_refused() -> None:
    with pytest.raises(BencodeError, match="twice"):
        encode({"a": 1, b"a": 2})  # type: ignore[arg-type]


def test_decode_wants_bytes() -> None:
    with pytest.raises(TypeError):
        decode("i1e")  # type: ignore[arg-type]
