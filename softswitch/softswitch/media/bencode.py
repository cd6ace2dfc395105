"""Bencode, the encoding of rtpengine's NG control protocol.

Four kinds of value (https://www.bittorrent.org/beps/bep_0003.html#bencoding):
byte strings ``<length>:<bytes>``, integers ``i<digits>e``, lists ``l...e`` and
dictionaries ``d<key><value>...e``.

The choices made here:

- ``encode`` takes ``bytes`` (or ``bytearray``/``memoryview``), ``str`` (sent as UTF-8),
  ``int``, lists or tuples, and mappings with ``str`` (or ``bytes``) keys. Keys are written
  sorted by their bytes, as the format asks, so equal values encode to equal bytes.
  ``bool``, ``float`` and ``None`` have no bencode form and are refused with ``TypeError``:
  passing one is our own programming error, not a malformed message.
- ``decode`` returns every byte string as ``bytes``, never ``str``. An SDP body or a SIP tag
  is not guaranteed to be UTF-8, and silently turning some strings into ``str`` and others
  not (depending on their content) would make every caller test both. ``text`` reads a key
  as ``str`` where the caller knows it is text. Dictionary *keys* are decoded to ``str``
  (rtpengine's keys are ASCII words and SIP tags); a key that is not UTF-8 is refused.
  Keys need not arrive sorted (rtpengine does not promise that), but a key twice is refused.
- Malformed input raises ``BencodeError`` (a ``ValueError``) and nothing else: truncation,
  a bad or leading-zero length or integer (``i-0e``, ``i03e``, ``03:abc``), trailing bytes,
  nesting deeper than ``MAX_DEPTH``, or an integer longer than ``MAX_INT_DIGITS`` digits
  (which also keeps ``int()`` away from CPython's digit limit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "BencodeError",
    "Encodable",
    "Value",
    "decode",
    "encode",
    "text",
]

MAX_DEPTH = 64
"""Lists and dictionaries nested deeper than this are refused (decoding and encoding)."""

MAX_INT_DIGITS = 64
"""Integers with more digits than this are refused; rtpengine's are 64-bit."""

Value: TypeAlias = "bytes | int | list[Value] | dict[str, Value]"
"""What ``decode`` returns."""

Encodable: TypeAlias = (
    "bytes | bytearray | memoryview | str | int"
    " | Sequence[Encodable] | Mapping[str, Encodable] | Mapping[bytes, Encodable]"
)
"""What ``encode`` accepts (a ``str`` is a sequence too, but is encoded as a string)."""


class BencodeError(ValueError):
    """Malformed bencode, with the offset where reading stopped (``None`` when encoding)."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset


# --- encoding -------------------------------------------------------------------------------


def encode(value: Encodable) -> bytes:
    """The bencoding of ``value``; dictionary keys are written in sorted byte order."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, bool):
        raise TypeError("bencode has no booleans; send 'yes'/'no' or 1/0 as the protocol wants")
    elif isinstance(value, int):
        if len(str(abs(value))) > MAX_INT_DIGITS:
            raise BencodeError(f"integer longer than {MAX_INT_DIGITS} digits")
        out.append(b"i%de" % value)
    elif isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            raise BencodeError(f"nested deeper than {MAX_DEPTH}")
        items: dict[bytes, object] = {}
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode()
            if not isinstance(key, bytes):
                raise TypeError(f"bencode dictionary keys are str or bytes, not {type(key)!r}")
            if key in items:
                raise BencodeError(f"dictionary key {key!r} given twice (as str and bytes)")
            items[key] = item
        out.append(b"d")
        for key in sorted(items):
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(items[key], out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Sequence):
        if depth >= MAX_DEPTH:
            raise BencodeError(f"nested deeper than {MAX_DEPTH}")
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value)!r}")


# --- decoding -------------------------------------------------------------------------------

_DIGITS = frozenset(b"0123456789")


def decode(data: bytes) -> Value:
    """The one value bencoded in ``data``; byte strings come back as ``bytes``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"decode wants bytes, not {type(data)!r}")
    raw = bytes(data)
    value, end = _decode(raw, 0, 0)
    if end != len(raw):
        raise BencodeError("trailing data after the value", end)
    return value


def _number(data: bytes, start: int, stop: int, *, signed: bool) -> int:
    """The canonical decimal integer in ``data[start:stop]``."""
    digits = data[start:stop]
    negative = signed and digits[:1] == b"-"
    if negative:
        digits = digits[1:]
    if not digits or not _DIGITS.issuperset(digits):
        raise BencodeError("not a decimal number", start)
    if len(digits) > MAX_INT_DIGITS:
        raise BencodeError(f"number longer than {MAX_INT_DIGITS} digits", start)
    if digits[0] == 0x30 and (len(digits) > 1 or negative):  # b"0"
        raise BencodeError("number with a leading zero (or -0)", start)
    number = int(digits)
    return -number if negative else number


def _string(data: bytes, i: int) -> tuple[bytes, int]:
    colon = data.find(b":", i, i + MAX_INT_DIGITS + 1)
    if colon < 0:
        raise BencodeError("string length without ':'", i)
    length = _number(data, i, colon, signed=False)
    end = colon + 1 + length
    if end > len(data):
        raise BencodeError("string runs past the end of the data", i)
    return data[colon + 1 : end], end


def _decode(data: bytes, i: int, depth: int) -> tuple[Value, int]:
    if i >= len(data):
        raise BencodeError("truncated: a value was expected", i)
    lead = data[i]
    if lead in _DIGITS:
        return _string(data, i)
    if lead == 0x69:  # b"i"
        end = data.find(b"e", i + 1, i + MAX_INT_DIGITS + 3)
        if end < 0:
            raise BencodeError("integer without 'e'", i)
        return _number(data, i + 1, end, signed=True), end + 1
    if lead not in (0x6C, 0x64):  # b"l", b"d"
        raise BencodeError(f"unexpected byte {data[i : i + 1]!r}", i)
    if depth >= MAX_DEPTH:
        raise BencodeError(f"nested deeper than {MAX_DEPTH}", i)
    i += 1
    if lead == 0x6C:
        items: list[Value] = []
        while True:
            if i >= len(data):
                raise BencodeError("truncated list", i)
            if data[i] == 0x65:  # b"e"
                return items, i + 1
            item, i = _decode(data, i, depth + 1)
            items.append(item)
    mapping: dict[str, Value] = {}
    while True:
        if i >= len(data):
            raise BencodeError("truncated dictionary", i)
        if data[i] == 0x65:
            return mapping, i + 1
        if data[i] not in _DIGITS:
            raise BencodeError("dictionary key is not a string", i)
        key_start = i
        raw_key, i = _string(data, i)
        try:
            key = raw_key.decode()
        except UnicodeDecodeError:
            raise BencodeError("dictionary key is not UTF-8", key_start) from None
        if key in mapping:
            raise BencodeError(f"dictionary key {key!r} given twice", key_start)
        mapping[key], i = _decode(data, i, depth + 1)


# --- reading --------------------------------------------------------------------------------


def text(mapping: Mapping[str, Value], key: str, default: str | None = None) -> str | None:
    """``mapping[key]`` as text: a byte string decoded as UTF-8 (undecodable bytes replaced),
    an integer in decimal; ``default`` when the key is absent or holds a list or dictionary."""
    value = mapping.get(key)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, int):
        return str(value)
    return default
