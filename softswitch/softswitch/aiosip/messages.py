"""aiosip's view of a SIP message, on the stack's own message objects.

aiosip handed programs messages with ``status_code``/``status_message``, a ``payload``
string, ``from_details``/``to_details``/``contact_details`` mappings, and ``headers`` one
could index (``message.headers['Expires']``). The stack's ``Request`` and ``Response``
keep their wire bytes and typed, lazily parsed fields; the classes here are subclasses that
add aiosip's names and nothing else (no new state), so one object serves the transaction
layer and the program at once. :func:`adopt` gives a received or built message this view
in place, which is why the subclasses declare empty ``__slots__``.

``headers[name]`` follows aiosip's value types: the value as a ``str`` when the field
occurs on one line, a ``list`` of the lines' values when it occurs on several, KeyError
when absent. Assigning converts any value with ``str()`` (aiosip programs pass ints, as in
``headers={'Expires': 3600}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, overload

from softswitch import sip
from softswitch.sip.digest import parse_auth_header
from softswitch.sip.headers import canonical_key

from .contact import Contact

__all__ = [
    "STACK_HEADERS",
    "Headers",
    "HeadersArg",
    "Request",
    "Response",
    "adopt",
    "header_items",
]

_MISSING: Final = object()

#: Fields the stack writes itself; a program's value for them is ignored (with a log line)
#: because a second Via, Call-ID or CSeq would corrupt the transaction or the dialog.
STACK_HEADERS: Final = frozenset({"via", "from", "to", "call-id", "cseq", "content-length"})

HeadersArg = Mapping[str, Any] | Iterable[tuple[str, Any]] | None
"""Headers as a program gives them: a dict (or multidict), or ``(name, value)`` pairs."""


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def header_items(headers: HeadersArg) -> list[tuple[str, str]]:
    """``(name, value)`` pairs from a dict, a multidict, pairs, or a stack ``Headers``.

    A list or tuple value stands for several field lines of the same name.
    """
    if headers is None:
        return []
    if isinstance(headers, sip.Headers):
        return list(headers)
    pairs: Iterable[tuple[str, Any]]
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        if isinstance(value, list | tuple):
            out.extend((name, _text(v)) for v in value)
        else:
            out.append((name, _text(value)))
    return out


class Headers(sip.Headers):
    """The stack's header multi-map with aiosip's (and multidict's) indexing added."""

    __slots__ = ()

    def _lines(self, name: str) -> list[str]:
        key = canonical_key(name)
        return [value for k, (_, value) in zip(self.names(), self, strict=True) if k == key]

    def __getitem__(self, name: str) -> str | list[str]:
        values = self._lines(name)
        if not values:
            raise KeyError(name)
        return values[0] if len(values) == 1 else values

    def __setitem__(self, name: str, value: object) -> None:
        if isinstance(value, list | tuple):
            self.remove(name)
            for item in value:
                self.add(name, _text(item))
        else:
            self.set(name, _text(value))

    def __delitem__(self, name: str) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def getall(self, name: str, default: Any = _MISSING) -> list[str]:
        """Every line's value (multidict's name); KeyError or ``default`` when absent."""
        values = self._lines(name)
        if not values:
            if default is _MISSING:
                raise KeyError(name)
            return list(default)
        return values

    def getone(self, name: str, default: Any = _MISSING) -> Any:
        values = self._lines(name)
        if not values:
            if default is _MISSING:
                raise KeyError(name)
            return default
        return values[0]

    def keys(self) -> list[str]:
        """Field names as written, one per line (repeated names repeat, as in a multidict)."""
        return [name for name, _ in self]

    def values(self) -> list[str]:
        return [value for _, value in self]

    def items(self) -> list[tuple[str, str]]:
        return list(self)


def _details(message: sip.Message, name: str) -> Contact | None:
    value = message.headers.get(name)
    return None if value is None else Contact.from_header(value)


class _View:
    """The aiosip attributes requests and responses share (a mixin over ``sip.Message``)."""

    __slots__ = ()

    @property
    def payload(self) -> str:
        """The body as text (aiosip's name); ``''`` when there is none."""
        return self._message.body.decode("utf-8", "replace")

    @payload.setter
    def payload(self, value: str | bytes | None) -> None:
        if value is None:
            value = b""
        self._message.body = value.encode() if isinstance(value, str) else bytes(value)

    @property
    def from_details(self) -> Contact:
        """From as an aiosip :class:`Contact` (a fresh mapping on every access)."""
        details = _details(self._message, "From")
        if details is None:
            raise KeyError("From")
        return details

    @property
    def to_details(self) -> Contact:
        details = _details(self._message, "To")
        if details is None:
            raise KeyError("To")
        return details

    @property
    def contact_details(self) -> Contact | None:
        """The first Contact, or None when the message has none (as in aiosip)."""
        contact = self._message.headers.get("Contact")
        if contact is None or contact.strip() == "*":
            return None
        return Contact.from_header(contact)

    @property
    def auth(self) -> dict[str, str] | None:
        """The parameters of Authorization (or else WWW-Authenticate), with ``mode``.

        aiosip's ``Auth`` was a mapping of the digest parameters; this is the same mapping
        as a plain dict. None when the message carries neither header or it is unreadable.
        """
        for name in ("Authorization", "WWW-Authenticate"):
            value = self._message.headers.get(name)
            if value is None:
                continue
            try:
                scheme, params = parse_auth_header(value)
            except ValueError:
                return None
            return {"mode": scheme, **params}
        return None

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """The message as sent on the wire (aiosip's name for ``bytes(message)``)."""
        return bytes(self._message)

    @property
    def _message(self) -> sip.Message:
        assert isinstance(self, sip.Message)
        return self

    def __str__(self) -> str:
        return bytes(self._message).decode("utf-8", "replace")


class Request(_View, sip.Request):
    """A request with aiosip's attributes (``method``, ``headers[...]``, ``payload``, ...)."""

    __slots__ = ()
    headers: Headers


class Response(_View, sip.Response):
    """A response with aiosip's ``status_code``, ``status_message`` and ``method``."""

    __slots__ = ()
    headers: Headers

    @property
    def status_code(self) -> int:
        return self.status

    @status_code.setter
    def status_code(self, value: int) -> None:
        self.status = value

    @property
    def status_message(self) -> str:
        return self.reason

    @status_message.setter
    def status_message(self, value: str) -> None:
        self.reason = value

    @property
    def method(self) -> str | None:
        """The method of the request answered, from CSeq (aiosip's ``Response.method``)."""
        cseq = self.cseq
        return None if cseq is None else cseq.method


@overload
def adopt(message: sip.Request) -> Request: ...
@overload
def adopt(message: sip.Response) -> Response: ...
@overload
def adopt(message: sip.Request | sip.Response) -> Request | Response: ...


def adopt(message: sip.Request | sip.Response) -> Request | Response:
    """Give a stack message aiosip's attributes, in place, and return it.

    In place because the transaction layer holds the same object (for retransmissions and
    matching); the subclasses add properties only, so nothing the stack relies on changes.
    """
    if not isinstance(message.headers, Headers):
        message.headers.__class__ = Headers
    if isinstance(message, sip.Request):
        if not isinstance(message, Request):
            message.__class__ = Request
        assert isinstance(message, Request)
        return message
    if not isinstance(message, Response):
        message.__class__ = Response
    assert isinstance(message, Response)
    return message
