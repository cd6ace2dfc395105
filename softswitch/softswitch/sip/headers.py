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
from typing import Final, TypeVar

from . import grammar as g

__all__ = ["Headers", "canonical_key", "split_commas"]

T = TypeVar("T")
#: A field ``Headers._parse_all`` parses: key, parse, its value when absent, and a parse of
#: one value (or None).
_Forced = tuple[str, Callable[[list[str]], object], object, Callable[[str], object] | None]
_MISSING: Final = object()

_COMPACT: Final = g.COMPACT_FORMS
_CANON: Final = g.CANONICAL_NAMES
_LIST: Final = g.LIST_HEADERS
#: How many lines of one field an edit still adds to (or takes from) the field's tuple in
#: the index; past that, the edit drops the index (see ``Headers._index_with``).
_INDEX_EDIT_LIMIT: Final = 16


def _slow_key(name: str) -> str:
    low = name.lower()
    return _COMPACT.get(low, low)


# The keys of the spellings that fill real messages (``Via``, ``via``, ``v``, ``V``,
# ``Call-ID`` ...), found by one dict look-up instead of lower-casing the name first: a
# message's every line, and every field read by name, goes through here. Each entry is
# what ``_slow_key`` gives, so any other spelling still gets the same key.
_KEY_OF: Final[dict[str, str]] = {
    spelling: _slow_key(spelling)
    for known in (*_CANON, *_COMPACT, *_LIST, *g.SINGLE_HEADERS)
    for spelling in (known, known.upper(), _CANON.get(known, known))
}


def canonical_key(name: str) -> str:
    """The lookup key of a header name: lower-case, compact forms expanded."""
    key = _KEY_OF.get(name)
    return _slow_key(name) if key is None else key


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
        return list(map(str.strip, value.split(",")))
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
    through this API is serialised as ``Name: value``, encoded into ``raw`` at once (so
    serialising is one join), or None when that encoding fails: the error is then raised
    where it always was, when the headers are serialised.  Values are stored unfolded and
    stripped.

    ``_index`` maps each key to its lines' values (tuples, in order), or is None until
    something needs it; the parser hands one over and an edit keeps it up to date (a
    proxy edits three or four fields of each message it forwards, then the transaction
    layer reads others: building it anew after each edit cost more than the edits).

    A copy shares the line lists, the parse cache and the index with its original until
    either is edited (``_shared``): a proxy copies every message it forwards, and only
    the copy it then edits needs lists of its own. Whatever shares them has the same
    lines, so what one parses into the shared cache holds for the others.
    """

    __slots__ = ("_cache", "_index", "_keys", "_names", "_raw", "_shared", "_values")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._keys: list[str] = []
        self._names: list[str] = []
        self._values: list[str] = []
        self._raw: list[bytes | None] = []
        self._cache: dict[str, object] = {}
        self._index: dict[str, tuple[str, ...]] | None = None
        self._shared = False
        for name, value in items:
            self._check(name, value)
            self._insert(len(self._keys), canonical_key(name), name, value)

    @classmethod
    def _from_wire(
        cls,
        keys: list[str],
        names: list[str],
        values: list[str],
        raw: list[bytes | None],
        index: dict[str, tuple[str, ...]] | None = None,
        cache: dict[str, object] | None = None,
    ) -> Headers:
        h = cls.__new__(cls)
        h._keys, h._names, h._values, h._raw = keys, names, values, raw
        h._cache = {} if cache is None else cache
        h._index = index
        h._shared = False
        return h

    # -- reading ---------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._index
        if index is not None:
            return canonical_key(name) in index
        return canonical_key(name) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name as written, value) per field line, in order."""
        return iter(list(zip(self._names, self._values, strict=True)))

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of the field (first list element for list-valued fields)."""
        key = _KEY_OF.get(name)
        if key is None:
            key = _slow_key(name)
        index = self._index
        if index is not None:
            values = index.get(key)
            if values is None:
                return default
            v = values[0]
        else:
            keys = self._keys
            if key not in keys:  # (a raised ValueError costs more than a second scan)
                return default
            v = self._values[keys.index(key)]
        if "," in v and key in _LIST:
            return split_commas(v)[0]
        return v

    def get_all(self, name: str) -> list[str]:
        """Every value of the field, in order, comma-split where the grammar is a list."""
        return self._get_all_key(canonical_key(name))

    def _line_index(self) -> dict[str, tuple[str, ...]]:
        """Each key's line values, in order (the index, built now if an edit dropped it)."""
        index = self._index
        if index is None:
            index = self._index = build_index(self._keys, self._values)
        return index

    def _get_all_key(self, key: str) -> list[str]:
        index = self._index
        if index is None:
            index = self._index = build_index(self._keys, self._values)
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
        index = self._index
        if index is not None:
            return {k: len(vs) for k, vs in index.items()}
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
            return value  # type: ignore[return-value]  # no cast(): a call on every read
        key = _KEY_OF.get(name)
        if key is None:
            key = _slow_key(name)
        if key != name:
            return self.parsed(key, parse)
        value = parse(self._get_all_key(key))
        self._cache[key] = value
        return value

    def _parse_all(self, fields: Iterable[_Forced]) -> None:
        """``parsed(key, parse)`` for each field, in order: what a check of the whole
        message forces, without the calls per field that getting there takes otherwise.

        Each field is (canonical key, parse, ``parse([])``, and a function ``one`` with
        ``one(v) == parse([v])`` or None): the shortcuts give what ``parse`` gives.
        """
        cache = self._cache
        index = self._index
        if index is None:
            index = self._index = build_index(self._keys, self._values)
        for key, parse, absent, one in fields:
            if key in cache:
                continue
            values = index.get(key)
            if values is None:
                cache[key] = absent
            elif len(values) == 1 and ("," not in values[0] or key not in _LIST):
                # One line, one value: no list to gather or split.
                cache[key] = parse([values[0]]) if one is None else one(values[0])
            elif key in _LIST:
                cache[key] = parse(self._get_all_key(key))
            else:
                cache[key] = parse(list(values))

    # -- writing ---------------------------------------------------------------------

    def _spelling(self, name: str, key: str) -> str:
        return _CANON.get(key, name)

    def _check(self, name: str, value: str) -> None:
        # Our own misuse, not a peer's malformed message: a CR or LF in a value would
        # inject header lines into what we send.
        if "\r" in value or "\n" in value:
            raise ValueError(f"invalid header field {name!r}: {value!r}")
        # A spelling _KEY_OF knows is a token; any other is checked character by character.
        if name not in _KEY_OF and (not name or not set(name) <= g.TOKEN_CHARS):
            raise ValueError(f"invalid header field {name!r}: {value!r}")

    def _edit(self, key: str) -> dict[str, tuple[str, ...]] | None:
        """Get ready to change ``key``'s lines: lists of our own if a copy shares them, its
        parsed value dropped. Returns the index for the caller to bring up to date."""
        if self._shared:
            self._keys = self._keys.copy()
            self._names = self._names.copy()
            self._values = self._values.copy()
            self._raw = self._raw.copy()
            self._cache = self._cache.copy()
            if self._index is not None:
                self._index = self._index.copy()
            self._shared = False
        self._cache.pop(key, None)
        return self._index

    def _index_with(
        self, index: dict[str, tuple[str, ...]], key: str, value: str, *, first: bool
    ) -> None:
        """The index after a line of ``key`` was added before (``first``) or after the others.

        A field with many lines is left to the next read to gather in one pass: adding
        lines one at a time to its tuple would copy it per line (the thousands of lines
        of one field a hostile request may carry).
        """
        found = index.get(key)
        if found is None:
            index[key] = (value,)
        elif len(found) < _INDEX_EDIT_LIMIT:
            index[key] = (value, *found) if first else (*found, value)
        else:
            self._index = None

    def set(self, name: str, value: str) -> None:
        """Replace every field line of ``name`` by one, where the first one was (or at the end)."""
        self._check(name, value)
        key = canonical_key(name)
        index = self._edit(key)
        keys = self._keys
        present = key in index if index is not None else key in keys
        if not present:
            self._insert(len(keys), key, name, value)
        else:
            first = keys.index(key)
            spelling = self._spelling(name, key)
            self._names[first] = spelling
            self._values[first], self._raw[first] = value, _encoded(spelling, value)
            more = len(index[key]) > 1 if index is not None else keys.count(key) > 1
            if more:
                self._drop(key, first + 1)
        if index is not None:
            index[key] = (value,)

    def add(self, name: str, value: str) -> None:
        """Add a field line after the last one of the same name (or at the end)."""
        self._check(name, value)
        key = canonical_key(name)
        index = self._edit(key)
        keys = self._keys
        pos = len(keys)
        if index is None or key in index:
            for i in range(len(keys) - 1, -1, -1):
                if keys[i] == key:
                    pos = i + 1
                    break
        self._insert(pos, key, name, value)
        if index is not None:
            self._index_with(index, key, value, first=False)

    def prepend(self, name: str, value: str) -> None:
        """Add a field line before the first one of the same name (or at the top).

        This is how a proxy pushes its Via and Record-Route (RFC 3261 16.6 steps 4, 8).
        """
        self._check(name, value)
        key = canonical_key(name)
        index = self._edit(key)
        keys = self._keys
        present = key in index if index is not None else key in keys
        self._insert(keys.index(key) if present else 0, key, name, value)
        if index is not None:
            self._index_with(index, key, value, first=True)

    def remove(self, name: str) -> int:
        """Remove every field line of ``name``; returns how many there were."""
        key = canonical_key(name)
        index = self._edit(key)
        if index is not None:
            index.pop(key, None)
        return self._drop(key, 0)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a field (one list element, not the line).

        Needed to strip the top Route (RFC 3261 16.4) or the top Via of a response
        (16.7 step 3) when several values share a line.
        """
        key = canonical_key(name)
        index = self._index
        present = key in index if index is not None else key in self._keys
        if not present:
            return None
        i = self._keys.index(key)
        index = self._edit(key)
        v = self._values[i]
        parts = split_commas(v) if key in _LIST and "," in v else [v]
        if len(parts) == 1:
            del self._keys[i], self._names[i], self._values[i], self._raw[i]
            rest = None
        else:
            self._values[i] = rest = ", ".join(parts[1:])
            self._raw[i] = _encoded(self._names[i], rest)
        if index is not None:
            found = index[key]
            if len(found) > _INDEX_EDIT_LIMIT:
                self._index = None  # (see ``_index_with``)
            elif rest is not None:
                index[key] = (rest, *found[1:])
            elif len(found) > 1:
                index[key] = found[1:]
            else:
                del index[key]
        return parts[0]

    def _insert(self, pos: int, key: str, name: str, value: str) -> None:
        """Insert a line; the caller keeps the index up to date."""
        spelling = self._spelling(name, key)
        self._keys.insert(pos, key)
        self._names.insert(pos, spelling)
        self._values.insert(pos, value)
        self._raw.insert(pos, _encoded(spelling, value))

    def _drop(self, key: str, start: int) -> int:
        """Delete the lines of ``key`` from index ``start`` on; returns how many there were.
        The caller keeps the index up to date.

        One pass that keeps the other lines, rather than a ``del`` per line: each ``del``
        shifts every later line, so removing the thousands of Proxy-Authorization lines a
        hostile request may carry would take time quadratic in the header count.
        """
        keys = self._keys
        keep = [i for i, k in enumerate(keys) if k != key or i < start]
        dropped = len(keys) - len(keep)
        if dropped:
            self._keys = [keys[i] for i in keep]
            self._names = [self._names[i] for i in keep]
            self._values = [self._values[i] for i in keep]
            self._raw = [self._raw[i] for i in keep]
        return dropped

    def copy(self) -> Headers:
        """An independent copy that still serialises untouched lines from their bytes.

        It shares the lines, parsed values and index with this one until either is
        edited (see ``_edit``).
        """
        h = Headers.__new__(Headers)
        h._keys, h._names, h._values, h._raw = self._keys, self._names, self._values, self._raw
        h._cache, h._index = self._cache, self._index
        h._shared = self._shared = True
        return h

    def subset(self, names: Iterable[str]) -> Headers:
        """A new Headers with only the lines of ``names``, in message order, bytes kept."""
        return self._subset(frozenset([canonical_key(n) for n in names]))

    def _subset(self, keys: frozenset[str]) -> Headers:
        """``subset`` of canonical keys.

        Every line of a kept field is kept, so its parsed value still holds. The lines a
        response copies from its request (Via, From, To, Call-ID, CSeq) are often the
        first ones and the only ones of their fields: then they are one slice of each
        list.
        """
        mine = self._keys
        top = len(keys)
        if keys.issuperset(mine[:top]) and keys.isdisjoint(mine[top:]):
            top = min(top, len(mine))
            h = Headers._from_wire(
                mine[:top], self._names[:top], self._values[:top], self._raw[:top]
            )
        else:
            idx = [i for i, k in enumerate(mine) if k in keys]
            names, values, raw = self._names, self._values, self._raw
            h = Headers._from_wire(
                [mine[i] for i in idx],
                [names[i] for i in idx],
                [values[i] for i in idx],
                [raw[i] for i in idx],
            )
        cache = self._cache
        if cache:
            kept = h._cache
            for key in keys:
                value = cache.get(key, _MISSING)
                if value is not _MISSING:
                    kept[key] = value
        return h

    # -- serialising -----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Each field line followed by CRLF; untouched lines byte-for-byte as received."""
        raw = self._raw
        if not raw:
            return b""
        try:
            return b"\r\n".join(raw) + b"\r\n"  # type: ignore[arg-type]
        except TypeError:  # a None: a line that would not encode
            return b"\r\n".join(self._wire_lines()) + b"\r\n"

    def _wire_lines(self) -> list[bytes]:
        """The field lines as sent, without their CRLFs; raises the encoding error of a
        line set through the API that cannot be encoded."""
        names, values = self._names, self._values
        return [
            f"{names[i]}: {values[i]}".encode("utf-8", "surrogateescape") if r is None else r
            for i, r in enumerate(self._raw)
        ]


def _encoded(name: str, value: str) -> bytes | None:
    """The field line of a value set through the API, or None if it does not encode."""
    try:
        return f"{name}: {value}".encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def build_index(keys: list[str], values: list[str]) -> dict[str, tuple[str, ...]]:
    """Each key's line values, in order.

    One pass builds every field's values, so the several fields a proxy reads from one
    message do not each walk every line. Kept as tuples of strings, not lists: the garbage
    collector stops tracking those, and a switch under load holds tens of thousands of
    messages (a list each was most of what its full collections had to walk).
    """
    index: dict[str, tuple[str, ...]] = {}
    repeated: dict[str, list[str]] = {}
    for k, v in zip(keys, values, strict=True):
        found = index.get(k)
        if found is None:
            index[k] = (v,)
        else:
            # Gathered in a list, not by extending the tuple: thousands of lines of one
            # field (a hostile request) would copy it again per line.
            more = repeated.get(k)
            if more is None:
                repeated[k] = [*found, v]
            else:
                more.append(v)
    for k, vs in repeated.items():
        index[k] = tuple(vs)
    return index
