"""Text a database can store, from text a peer sent.

The SIP parser keeps a peer's undecodable bytes as surrogates (``surrogateescape``), which
are not valid UTF-8: SQLite and PostgreSQL both refuse them, and PostgreSQL refuses NUL in
text as well. A CDR must not be lost for that, so a store that fails to write one record
retries it with such text escaped as ``\\xNN``.
"""

from __future__ import annotations

__all__ = ["escaped"]


def escaped(value: object, *, nul: bool = False) -> object:
    """``value`` with surrogates (and, when ``nul``, NUL characters) as ``\\xNN`` escapes;
    anything but text as it is."""
    if not isinstance(value, str):
        return value
    if nul and "\x00" in value:
        value = value.replace("\x00", "\\x00")
    if value.isascii():
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no byte was escaped into
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")
