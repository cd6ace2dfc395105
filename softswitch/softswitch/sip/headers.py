"""The header section: an ordered, case-insensitive multi-map that remembers the wire bytes.

A proxy reads a handful of header fields and forwards the rest untouched, so each field
line keeps the exact bytes it arrived as (folding, spacing, compact name and all) and is
re-emitted from them unless it was modified; structured values are parsed only when
asked for and cached until the field changes (see ``Headers.parsed``).

Keys are lower-case long names: ``v``, ``VIA`` and ``Via`` are one field (RFC 3261 7.3.3,
7.3.5).  ``get_all`` splits comma-separated values only for fields whose grammar is a
list (``grammar.LIST_HEADERS``), never for Authorization-type fields whose commas
separate parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Final, TypeVar, cast

from . import grammar as g

__all__ = ["Headers", "canonical_key", "split_commas"]

T = TypeVar("T")
_MISSING: Final = object()

_COMPACT: Final = g.COMPACT_FORMS
_CANON: Final = g.CANONICAL_NAMES
_LIST: Final = g.LIST_HEADERS


def canonical_key(name: str) -> str:
    """The lookup key of a header name: lower-case, compact forms expanded."""
    low = name.lower()
    return _COMPACT.get(low, low)


# The stretches of a list value in which a comma separates nothing: a quoted string (to
# its closing quote, or to the end when unbalanced; a backslash escapes the character
# after it), and ``<...>`` (to the first ``>`` outside a quoted string, or to the end).
# The repeats are possessive and their alternatives start with different characters, so
# a match never gives back what it took and costs its own length.
_PROTECTED_RE: Final = re.compile(
    r'"(?:[^"\\]|\\.)*+"?|<(?:[^>"]++|"(?:[^"\\]|\\.)*+"?)*+>?', re.DOTALL
)


def split_commas(value: str) -> list[str]:
    """Split a list-valued field at commas outside quoted strings and ``<...>``.

    Elements are stripped; empty elements are kept (as '') so the typed parsers can
    refuse them (RFC 4475 badinv01: ``,,`` is not in RFC 3261's grammar).  A quote opens a
    quoted string inside ``<...>`` too, and ``<`` does not nest.  The quoted strings and
    bracketed URIs are found by one pattern and the text between them is split by
    ``str.split``, rather than stepping through every character in Python: a field of
    64 KiB is read in one pass either way, but this way at C speed.
    """
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [v.strip() for v in value.split(",")]
    out: list[str] = []
    start = 0  # where the element being read began
    pos = 0  # where the last protected stretch ended
    for m in _PROTECTED_RE.finditer(value):
        start = _split_between(value, start, pos, m.start(), out)
        pos = m.end()
    start = _split_between(value, start, pos, len(value), out)
    out.append(value[start:].strip())
    return out


def _split_between(value: str, start: int, a: int, b: int, out: list[str]) -> int:
    """Append the elements that the commas of ``value[a:b]`` end; return where the next
    one begins (``start``, the current element's beginning, when there is no comma)."""
    if value.find(",", a, b) < 0:
        return start
    parts = value[a:b].split(",")
    out.append(value[start : a + len(parts[0])].strip())
    out.extend([p.strip() for p in parts[1:-1]])
    return b - len(parts[-1])


class Headers:
    """Ordered multi-map of header fields, one entry per field line.

    Each entry is (key, name as written or given, value, raw bytes or None).  ``raw`` is
    the field line exactly as received, without its final CRLF; an entry added or changed
    through this API has ``raw`` None and is serialised as ``Name: value``.  Values are
    stored unfolded and stripped.
    """

    __slots__ = ("_cache", "_index", "_keys", "_names", "_raw", "_values")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._keys: list[str] = []
        self._names: list[str] = []
        self._values: list[str] = []
        self._raw: list[bytes | None] = []
        self._cache: dict[str, object] = {}
        self._index: dict[str, tuple[str, ...]] | None = None
        for name, value in items:
            self._check(name, value)
            self._append(len(self._keys), canonical_key(name), name, value)

    @classmethod
    def _from_wire(
        cls, keys: list[str], names: list[str], values: list[str], raw: list[bytes | None]
    ) -> Headers:
        h = cls.__new__(cls)
        h._keys, h._names, h._values, h._raw = keys, names, values, raw
        h._cache = {}
        h._index = None
        return h

    # -- reading ---------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_key(name) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name as written, value) per field line, in order."""
        return iter(list(zip(self._names, self._values, strict=True)))

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of the field (first list element for list-valued fields)."""
        key = canonical_key(name)
        try:
            i = self._keys.index(key)
        except ValueError:
            return default
        v = self._values[i]
        if key in _LIST and "," in v:
            return split_commas(v)[0]
        return v

    def get_all(self, name: str) -> list[str]:
        """Every value of the field, in order, comma-split where the grammar is a list."""
        return self._get_all_key(canonical_key(name))

    def _get_all_key(self, key: str) -> list[str]:
        index = self._index
        if index is None:
            # One pass builds every field's values, so the several fields a proxy reads
            # from one message do not each walk every line; any edit drops it. Kept as tuples
            # of strings, not lists: the garbage collector stops tracking those, and a switch
            # under load holds tens of thousands of messages (a list each was most of what
            # its full collections had to walk).
            lists: dict[str, list[str]] = {}
            for k, v in zip(self._keys, self._values, strict=True):
                found = lists.get(k)
                if found is None:
                    lists[k] = [v]
                else:
                    found.append(v)
            index = {k: tuple(vs) for k, vs in lists.items()}
            self._index = index
        values = index.get(key)
        if values is None:
            return []
        if key not in _LIST:
            return list(values)
        out: list[str] = []
        for v in values:
            if "," in v:
                out.extend(split_commas(v))
            else:
                out.append(v)
        return out

    def count(self, name: str) -> int:
        """Number of field lines (not values) carrying ``name``."""
        return self._keys.count(canonical_key(name))

    def names(self) -> list[str]:
        """Lookup keys of the field lines, in order (duplicates kept)."""
        return list(self._keys)

    def key_counts(self) -> dict[str, int]:
        """How many field lines carry each lookup key (one pass, for validation)."""
        counts: dict[str, int] = {}
        for k in self._keys:
            counts[k] = counts.get(k, 0) + 1
        return counts

    def parsed(self, name: str, parse: Callable[[list[str]], T]) -> T:
        """``parse(get_all(name))``, cached until the field is modified.

        Lets the message classes offer typed properties that cost nothing on messages
        where nobody reads them, and nothing the second time on messages where they are.
        """
        value = self._cache.get(name, _MISSING)
        if value is not _MISSING:
            return cast(T, value)
        key = canonical_key(name)
        if key != name:
            return self.parsed(key, parse)
        value = parse(self._get_all_key(key))
        self._cache[key] = value
        return value

    # -- writing ---------------------------------------------------------------------

    def _spelling(self, name: str, key: str) -> str:
        return _CANON.get(key, name)

    def _check(self, name: str, value: str) -> None:
        # Our own misuse, not a peer's malformed message: a CR or LF in a value would
        # inject header lines into what we send.
        if "\r" in value or "\n" in value or not name or not set(name) <= g.TOKEN_CHARS:
            raise ValueError(f"invalid header field {name!r}: {value!r}")

    def set(self, name: str, value: str) -> None:
        """Replace every field line of ``name`` by one, where the first one was (or at the end)."""
        self._check(name, value)
        key = canonical_key(name)
        self._cache.pop(key, None)
        self._index = None
        try:
            first = self._keys.index(key)
        except ValueError:
            self._append(len(self._keys), key, name, value)
            return
        self._keys[first], self._names[first] = key, self._spelling(name, key)
        self._values[first], self._raw[first] = value, None
        self._drop(key, first + 1)

    def add(self, name: str, value: str) -> None:
        """Add a field line after the last one of the same name (or at the end)."""
        self._check(name, value)
        key = canonical_key(name)
        self._cache.pop(key, None)
        pos = len(self._keys)
        for i in range(len(self._keys) - 1, -1, -1):
            if self._keys[i] == key:
                pos = i + 1
                break
        self._append(pos, key, name, value)

    def prepend(self, name: str, value: str) -> None:
        """Add a field line before the first one of the same name (or at the top).

        This is how a proxy pushes its Via and Record-Route (RFC 3261 16.6 steps 4, 8).
        """
        self._check(name, value)
        key = canonical_key(name)
        self._cache.pop(key, None)
        try:
            pos = self._keys.index(key)
        except ValueError:
            pos = 0
        self._append(pos, key, name, value)

    def remove(self, name: str) -> int:
        """Remove every field line of ``name``; returns how many there were."""
        key = canonical_key(name)
        self._cache.pop(key, None)
        return self._drop(key, 0)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a field (one list element, not the line).

        Needed to strip the top Route (RFC 3261 16.4) or the top Via of a response
        (16.7 step 3) when several values share a line.
        """
        key = canonical_key(name)
        try:
            i = self._keys.index(key)
        except ValueError:
            return None
        self._cache.pop(key, None)
        self._index = None
        v = self._values[i]
        parts = split_commas(v) if key in _LIST and "," in v else [v]
        if len(parts) == 1:
            self._delete(i)
        else:
            self._values[i] = ", ".join(parts[1:])
            self._raw[i] = None
        return parts[0]

    def _append(self, pos: int, key: str, name: str, value: str) -> None:
        self._index = None
        self._keys.insert(pos, key)
        self._names.insert(pos, self._spelling(name, key))
        self._values.insert(pos, value)
        self._raw.insert(pos, None)

    def _delete(self, i: int) -> None:
        self._index = None
        del self._keys[i], self._names[i], self._values[i], self._raw[i]

    def _drop(self, key: str, start: int) -> int:
        """Delete the lines of ``key`` from index ``start`` on; returns how many there were.

        One pass that keeps the other lines, rather than a ``del`` per line: each ``del``
        shifts every later line, so removing the thousands of Proxy-Authorization lines a
        hostile request may carry would take time quadratic in the header count.
        """
        keys = self._keys
        keep = [i for i, k in enumerate(keys) if k != key or i < start]
        dropped = len(keys) - len(keep)
        if dropped:
            self._index = None
            self._keys = [keys[i] for i in keep]
            self._names = [self._names[i] for i in keep]
            self._values = [self._values[i] for i in keep]
            self._raw = [self._raw[i] for i in keep]
        return dropped

    def copy(self) -> Headers:
        """An independent copy that still serialises untouched lines from their bytes."""
        h = Headers._from_wire(
            list(self._keys), list(self._names), list(self._values), list(self._raw)
        )
        h._cache = dict(self._cache)  # same lines, same parsed values (immutable)
        return h

    def subset(self, names: Iterable[str]) -> Headers:
        """A new Headers with only the lines of ``names``, in message order, bytes kept."""
        keys = {canonical_key(n) for n in names}
        idx = [i for i, k in enumerate(self._keys) if k in keys]
        h = Headers._from_wire(
            [self._keys[i] for i in idx],
            [self._names[i] for i in idx],
            [self._values[i] for i in idx],
            [self._raw[i] for i in idx],
        )
        # Every line of a kept field is kept, so its parsed value still holds.
        h._cache = {k: v for k, v in self._cache.items() if k in keys}
        return h

    # -- serialising -----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Each field line followed by CRLF; untouched lines byte-for-byte as received."""
        out = []
        for name, value, raw in zip(self._names, self._values, self._raw, strict=True):
            if raw is None:
                out.append(f"{name}: {value}".encode("utf-8", "surrogateescape"))
            else:
                out.append(raw)
        out.append(b"")
        return b"\r\n".join(out)
