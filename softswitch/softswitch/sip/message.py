"""SIP requests and responses (RFC 3261 section 7) as mutable objects a proxy edits per hop.

A message is a start line, a ``Headers`` multi-map and a body.  Typed properties
(``via``, ``cseq``, ``from_`` ...) parse their field on first access and cache it; a
malformed value raises ``SipParseError`` at that point, which is why the transaction layer
calls ``validate.validate_request`` once, right after parsing, before trusting them.

``bytes(msg)`` re-emits the start line and every untouched header line exactly as they
arrived; the body is never altered, and Content-Length is rewritten only when the body
is replaced through the ``body`` setter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

from . import grammar as g
from .errors import SipParseError
from .fields import (
    AuthHeader,
    CSeq,
    NameAddr,
    Reason,
    Via,
    make_tag,
    parse_auth_list,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_reason_list,
    parse_via_list,
    small_int,
)
from .headers import Headers
from .uri import URI, parse_uri

__all__ = ["REASON_PHRASES", "Message", "Request", "Response"]

REASON_PHRASES: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
}


def _checked_reason(reason: str) -> str:
    # Our own misuse, as for header values: a CR or LF would end the status line early
    # and inject lines into what we send.
    if "\r" in reason or "\n" in reason:
        raise ValueError(f"invalid reason phrase: {reason!r}")
    return reason


def _default_reason(status: int) -> str:
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


def _first_cseq(values: list[str]) -> CSeq | None:
    return parse_cseq(values[0]) if values else None


def _first_name_addr(values: list[str]) -> NameAddr | None:
    return parse_name_addr(values[0]) if values else None


def _contacts(values: list[str]) -> tuple[NameAddr, ...]:
    if values == ["*"]:
        return ()
    return parse_name_addr_list(values)


def _int_value(what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        n = small_int(value)
        if n is None:
            raise SipParseError(f"Bad {what} header")
        return n

    return parse


def _first_int(one: Callable[[str], int]) -> Callable[[list[str]], int | None]:
    def parse(values: list[str]) -> int | None:
        return one(values[0]) if values else None

    return parse


_max_forwards_value = _int_value("Max-Forwards")
_content_length_value = _int_value("Content-Length")
_parse_max_forwards = _first_int(_max_forwards_value)
_parse_content_length = _first_int(_content_length_value)

_COPIED_TO_RESPONSE: Final = frozenset({"via", "from", "to", "call-id", "cseq"})

# Methods known to be tokens, so a request for one is made without checking each
# character (a proxy makes a request per hop).
_METHODS: Final = frozenset(
    {
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "INVITE",
        "MESSAGE",
        "NOTIFY",
        "OPTIONS",
        "PRACK",
        "PUBLISH",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "UPDATE",
    }
)


def _as_headers(headers: Headers | Iterable[tuple[str, str]] | None) -> Headers:
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    return Headers(headers)


class Message:
    """What requests and responses share: headers, body and the typed header properties.

    The contract of every typed property (``via``, ``top_via``, ``call_id``, ``cseq``,
    ``from_``, ``to``, ``max_forwards``, ``contact``, ``route``, ``record_route``,
    ``content_type``, the auth lists, ``reasons``): None (or an empty list) when the field
    is absent, SipParseError when it is malformed, and a fresh list each time so callers
    cannot corrupt the cache.  Parsing happens on first access; editing the field through
    ``headers`` (or a setter here) drops the cached value.  Single-valued fields read the
    first occurrence; ``validate_request`` is what refuses repeated ones.
    """

    __slots__ = ("_body", "_start", "headers")

    headers: Headers
    _body: bytes
    _start: bytes | None

    def _init_body(self, body: bytes) -> None:
        self._body = bytes(body)
        self._start = None
        self._frame()

    def _frame(self) -> None:
        """Content-Length as the body has it: a message made here, or copied, is framed by
        its own body whatever the field said (absent, or written with leading zeros)."""
        length = str(len(self._body))
        if self.headers.get("content-length") != length:
            self.headers.set("Content-Length", length)

    # -- body ------------------------------------------------------------------------

    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        """Replace the body; Content-Length follows (the only time it is rewritten)."""
        self._body = bytes(value)
        self.headers.set("Content-Length", str(len(self._body)))

    # -- serialising -----------------------------------------------------------------

    def _start_line(self) -> bytes:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        start = self._start if self._start is not None else self._start_line()
        # One join: the start line, each header line and the body, the empty line between.
        try:
            return b"\r\n".join([start, *self.headers._raw, b"", self._body])  # type: ignore[list-item]
        except TypeError:  # a header line that would not encode: raise its error
            return b"\r\n".join([start, *self.headers._wire_lines(), b"", self._body])

    # -- typed header access (parsed on first use, cached until the field changes) ----

    @property
    def via(self) -> list[Via]:
        """Every Via value, top first."""
        return list(self.headers.parsed("via", parse_via_list))

    @property
    def top_via(self) -> Via | None:
        vias = self.headers.parsed("via", parse_via_list)
        return vias[0] if vias else None

    @property
    def call_id(self) -> str | None:
        return self.headers.get("call-id")

    @property
    def cseq(self) -> CSeq | None:
        return self.headers.parsed("cseq", _first_cseq)

    @property
    def from_(self) -> NameAddr | None:
        return self.headers.parsed("from", _first_name_addr)

    @property
    def to(self) -> NameAddr | None:
        return self.headers.parsed("to", _first_name_addr)

    @property
    def from_tag(self) -> str | None:
        f = self.headers.parsed("from", _first_name_addr)
        return None if f is None else f.tag

    @property
    def to_tag(self) -> str | None:
        t = self.headers.parsed("to", _first_name_addr)
        return None if t is None else t.tag

    @property
    def max_forwards(self) -> int | None:
        return self.headers.parsed("max-forwards", _parse_max_forwards)

    @max_forwards.setter
    def max_forwards(self, value: int) -> None:
        if not 0 <= value <= 2**31:
            raise ValueError(f"Max-Forwards out of range: {value}")
        self.headers.set("Max-Forwards", str(value))

    @property
    def content_length(self) -> int | None:
        """The Content-Length header's value (the body is already framed by it)."""
        return self.headers.parsed("content-length", _parse_content_length)

    @property
    def contact(self) -> list[NameAddr]:
        """Contact values; empty both when absent and for the ``*`` of a REGISTER."""
        return list(self.headers.parsed("contact", _contacts))

    @property
    def contact_is_wildcard(self) -> bool:
        return self.headers.get_all("contact") == ["*"]

    @property
    def route(self) -> list[NameAddr]:
        return list(self.headers.parsed("route", parse_name_addr_list))

    @property
    def record_route(self) -> list[NameAddr]:
        return list(self.headers.parsed("record-route", parse_name_addr_list))

    @property
    def content_type(self) -> str | None:
        """The Content-Type value as written (media type and parameters)."""
        return self.headers.get("content-type")

    @property
    def media_type(self) -> str | None:
        """``type/subtype`` of the body, lower-cased, without parameters."""
        ct = self.headers.get("content-type")
        if ct is None:
            return None
        return ct.split(";", 1)[0].strip().lower().replace(" ", "").replace("\t", "")

    @property
    def authorization(self) -> list[AuthHeader]:
        return list(self.headers.parsed("authorization", parse_auth_list))

    @property
    def proxy_authorization(self) -> list[AuthHeader]:
        return list(self.headers.parsed("proxy-authorization", parse_auth_list))

    @property
    def www_authenticate(self) -> list[AuthHeader]:
        return list(self.headers.parsed("www-authenticate", parse_auth_list))

    @property
    def proxy_authenticate(self) -> list[AuthHeader]:
        return list(self.headers.parsed("proxy-authenticate", parse_auth_list))

    @property
    def reasons(self) -> list[Reason]:
        """Reason header values (RFC 3326), e.g. the Q.850 cause of a BYE or CANCEL."""
        return list(self.headers.parsed("reason", parse_reason_list))

    # -- per-hop edits a proxy makes (RFC 3261 16.6) ----------------------------------

    def push_via(self, via: Via | str) -> None:
        self.headers.prepend("Via", str(via))

    def pop_via(self) -> str | None:
        """Remove the top Via value (a proxy forwarding a response, RFC 3261 16.7).

        The Via values already parsed stay parsed, less the top one: what the transport
        reads next is the new top Via (where the response goes). That is what parsing
        the field again gives when its first line holds no quoted string and no ``<``:
        its values are then split at every comma, and joined again at commas.
        """
        h = self.headers
        vias = h._cache.get("via")
        index = h._index
        lines = None if index is None else index.get("via")
        top = h.pop_first("Via")
        if vias is not None and lines and '"' not in lines[0] and "<" not in lines[0]:
            h._cache["via"] = vias[1:]  # type: ignore[index]  # what parse_via_list gave
        return top


class Request(Message):
    """A SIP request.  ``uri`` is the parsed Request-URI (an AbsoluteURI for schemes
    other than sip/sips/tel, so a proxy can answer 416 instead of 400)."""

    __slots__ = ("_method", "_uri", "_version")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        version: str = g.SUPPORTED_VERSION,
    ) -> None:
        if method not in _METHODS and (not method or not set(method) <= g.TOKEN_CHARS):
            raise ValueError(f"invalid method {method!r}")
        self._method = method
        self._uri = parse_uri(uri) if isinstance(uri, str) else uri
        self._version = version
        self.headers = headers if isinstance(headers, Headers) else _as_headers(headers)
        self._init_body(body)

    @classmethod
    def _from_wire(
        cls, method: str, uri: URI, version: str, headers: Headers, body: bytes, start: bytes
    ) -> Request:
        r = cls.__new__(cls)
        r._method, r._uri, r._version = method, uri, version
        r.headers, r._body, r._start = headers, body, start
        return r

    def copy(self) -> Request:
        """An independent copy, the one ``Request(method, uri, headers.copy(), body)``
        makes (Request-Line printed anew, SIP/2.0, Content-Length as the body has it),
        without that constructor's checks of what was checked when this one was made: a
        proxy copies every request it forwards. Header lines keep their received bytes."""
        r = Request.__new__(Request)
        r._method, r._uri, r._version = self._method, self._uri, g.SUPPORTED_VERSION
        r.headers, r._body, r._start = self.headers.copy(), self._body, None
        r._frame()
        return r

    @classmethod
    def build(
        cls,
        method: str,
        uri: URI | str,
        *,
        via: Via | Sequence[Via],
        from_: NameAddr,
        to: NameAddr,
        call_id: str,
        cseq: int,
        max_forwards: int = 70,
        contact: NameAddr | None = None,
        route: Sequence[NameAddr] = (),
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A new request with the six mandatory fields of RFC 3261 8.1.1 in their order.

        ``from_`` gets a fresh tag if it has none (8.1.1.3: the UAC MUST add one).
        """
        if from_.tag is None:
            from_ = from_.with_tag(make_tag())
        h = Headers()
        for v in [via] if isinstance(via, Via) else via:
            h.add("Via", str(v))
        h.add("Max-Forwards", str(max_forwards))
        for r in route:
            h.add("Route", str(r))
        h.add("From", str(from_))
        h.add("To", str(to))
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            h.add("Contact", str(contact))
        for name, value in headers:
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return cls(method, uri, h, body)

    def _start_line(self) -> bytes:
        line = f"{self._method} {self._uri} {self._version}"
        return line.encode("utf-8", "surrogateescape")

    @property
    def method(self) -> str:
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        self._method, self._start = value, None

    @property
    def uri(self) -> URI:
        return self._uri

    @uri.setter
    def uri(self, value: URI | str) -> None:
        self._uri = parse_uri(value) if isinstance(value, str) else value
        self._start = None

    @property
    def version(self) -> str:
        return self._version

    def __repr__(self) -> str:
        return f"<Request {self._method} {self._uri} call-id={self.call_id!r}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("_reason", "_status", "_version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        version: str = g.SUPPORTED_VERSION,
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"status out of range: {status}")
        self._status = status
        self._reason = _default_reason(status) if reason is None else _checked_reason(reason)
        self._version = version
        self.headers = headers if isinstance(headers, Headers) else _as_headers(headers)
        self._init_body(body)

    @classmethod
    def _from_wire(
        cls, status: int, reason: str, version: str, headers: Headers, body: bytes, start: bytes
    ) -> Response:
        r = cls.__new__(cls)
        r._status, r._reason, r._version = status, reason, version
        r.headers, r._body, r._start = headers, body, start
        return r

    def copy(self) -> Response:
        """An independent copy, the one ``Response(status, reason, headers.copy(), body)``
        makes (SIP/2.0, Content-Length as the body has it), without that constructor's
        checks of what was checked when this one was made: a proxy copies every response
        it relays. Header lines keep their received bytes, and so does a received
        Status-Line printed anew the same (it is, when it has a reason phrase and says
        SIP/2.0 in capitals: the parser's pattern puts one space on either side of the
        code)."""
        r = Response.__new__(Response)
        r._status, r._reason, r._version = self._status, self._reason, g.SUPPORTED_VERSION
        start = self._start
        if start is not None and not (self._reason and self._version == g.SUPPORTED_VERSION):
            start = None
        r.headers, r._body, r._start = self.headers.copy(), self._body, start
        r._frame()
        return r

    @classmethod
    def for_request(
        cls,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Response:
        """A response copying Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6.2).

        The copied lines keep their received bytes.  ``to_tag`` is added to To when To
        has none (a UAS or a proxy answering itself, 8.2.6.2: not for 100 Trying).
        """
        h = request.headers._subset(_COPIED_TO_RESPONSE)
        if to_tag is not None and "to" in h:
            to_value = h.get("to") or ""
            if request.to_tag is None:
                h.set("To", f"{to_value};tag={to_tag}")
        for name, value in headers:
            h.add(name, value)
        return cls(status, reason, h, body)

    @classmethod
    def for_parse_error(cls, error: SipParseError) -> Response | None:
        """A stateless error reply to a request that could not be parsed, if possible.

        Needs at least a Via to know where to send it (RFC 3261 18.2.2); None otherwise,
        and the message is dropped.
        """
        h = Headers(error.partial)
        if "via" not in h:
            return None
        return cls(error.status, error.reason, h)

    def _start_line(self) -> bytes:
        return f"{self._version} {self._status} {self._reason}".encode("utf-8", "surrogateescape")

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        self._status, self._start = value, None

    @property
    def reason(self) -> str:
        return self._reason

    @reason.setter
    def reason(self, value: str) -> None:
        self._reason, self._start = _checked_reason(value), None

    @property
    def version(self) -> str:
        return self._version

    def __repr__(self) -> str:
        return f"<Response {self._status} {self._reason} call-id={self.call_id!r}>"
