"""Bytes to ``Request``/``Response``: framing, start line and header lines (RFC 3261 7, 18.3).

The parser does the work every message needs and nothing more: split start line, header
lines and body with ``bytes.find``/``split``, read the start line and the Request-URI,
name and unfold each header line, frame the body.  Header *values* are parsed lazily by
the message's typed properties; ``validate.validate_request`` forces the ones a proxy
relies on.

Framing (RFC 3261 18.3): over a stream (``stream=True``) Content-Length is mandatory and
must match the bytes given; over UDP the body is the rest of the datagram when it is
absent (RFC 4475 inv2543), octets beyond Content-Length are discarded (dblreq) and a
Content-Length larger than the datagram is an error (clerr).  ``frame_length`` tells a
stream transport where one message ends in its buffer.

Liberal in what it accepts where RFC 4475/5118 ask for it: CRLFs before the start line
(7.5 keep-alives), bare LF line ends, a header section that ends at the end of the
datagram without its empty line.  Anything else malformed raises ``SipParseError``, the
only exception ``parse_message`` raises for any input bytes.
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import Final, TypeVar, cast

from . import grammar as g
from .errors import SipParseError
from .fields import CACHED_TEXT_MAX
from .headers import _KEY_OF, Headers, build_index
from .message import Request, Response
from .uri import URI, SipURI, parse_uri

__all__ = ["frame_length", "parse_message", "stream_content_length"]

T = TypeVar("T")

_COMPACT: Final = g.COMPACT_FORMS
_TOKENS_RE: Final = re.compile(g.TOKEN)
_TOKEN_RE: Final = g.TOKEN_RE
_FIRST: Final = itemgetter(0)
_SECOND: Final = itemgetter(1)
_REQUEST_LINE_RE: Final = g.REQUEST_LINE_RE
_STATUS_LINE_RE: Final = g.STATUS_LINE_RE
_BLANK_LINE_RE: Final = re.compile(rb"\r?\n\r?\n")
_PARTIAL_NAMES: Final = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
}


def _split_head(data: bytes, stream: bool) -> tuple[int, int, int]:
    """Offsets (start of message, end of header section, start of body)."""
    start = 0
    n = len(data)
    while start < n and data[start] in (10, 13):
        start += 1
    if start == n:
        raise SipParseError("Empty message")
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        # A bare-LF blank line earlier than the first CRLFCRLF? (mixed line ends)
        lf = data.find(b"\n\n", start, end)
        if lf < 0:
            return start, end, end + 4
    m = _BLANK_LINE_RE.search(data, start)
    if m is not None:
        return start, m.start(), m.end()
    if stream:
        raise SipParseError("Incomplete message header")
    # RFC 5118 4.10 and RFC 4475 baddn end at the end of the datagram without the empty
    # line: accept the header section as complete, with no body.
    if data.endswith(b"\n"):
        stop = n - 2 if data.endswith(b"\r\n") else n - 1
        return start, max(stop, start), n
    raise SipParseError("Truncated message")


def _header_lines(head: bytes) -> tuple[list[bytes], list[str], bool]:
    """Raw and decoded lines of the header section, folded lines already joined."""
    raw = head.split(b"\r\n")
    nl = len(raw) - 1
    if head.count(b"\n") != nl or head.count(b"\r") != nl:
        # Bare LF line ends (tolerated); a CR anywhere else is an error.
        raw = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
        for line in raw:
            if b"\r" in line:
                raise SipParseError("Bare CR in header section")
    folded = b"\n " in head or b"\n\t" in head
    if folded:
        # Each field's lines are gathered first and joined once: appending a line to the
        # bytes joined so far would copy them again for every continuation line, which a
        # 64 KiB header of 20,000 one-space lines turns into gigabytes of copying.
        fields: list[list[bytes]] = [[raw[0]]]
        for line in raw[1:]:
            if line[:1] in (b" ", b"\t"):
                if len(fields) == 1:
                    raise SipParseError("Continuation line before first header")
                fields[-1].append(line)
            else:
                fields.append([line])
        # Joined with CRLF even after bare-LF input, so what we forward is clean CRLF
        # throughout.
        raw = [lines[0] if len(lines) == 1 else b"\r\n".join(lines) for lines in fields]
    text = [line.decode("utf-8", "surrogateescape") for line in raw]
    return raw, text, folded


def _unfold(value: str) -> str:
    """Replace each fold, ``*WSP [CR] LF 1*WSP``, by one SP.

    RFC 3261 25.1: "All linear white space, including folding, has the same semantics as
    SP.  A recipient MAY replace any linear white space with a single SP before
    interpreting the field value".  The result is exactly
    ``re.sub(r"[ \\t]*\\r?\\n[ \\t]+", " ", value)``, but found from the line breaks: that
    pattern, unanchored, starts again from every blank of a run and so takes time
    quadratic in the run's length (a 64 KiB datagram holding one folded header and a run
    of spaces took over 20 seconds).
    """
    pieces = value.split("\n")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece[:1] in (" ", "\t"):
            # out[-1] is the previous piece, already without the blanks the previous fold
            # took from its start: this fold takes its trailing CR and blanks.
            last = out[-1]
            out[-1] = (last[:-1] if last[-1:] == "\r" else last).rstrip(" \t")
            out.append(" ")
            out.append(piece.lstrip(" \t"))
        else:
            # A line break not followed by a blank is not a fold (the header-section
            # splitter never leaves one in a value): kept as it is.
            out.append("\n")
            out.append(piece)
    return "".join(out)


def _parse(data: bytes, stream: bool) -> Request | Response:
    end = data.find(b"\r\n\r\n")
    if end > 0 and data[0] not in (10, 13):
        # The usual message: no leading CRLFs, and (when the counts below show CRLF line
        # ends throughout) no bare-LF blank line before this one, so this is where the
        # header section ends, as ``_split_head`` would find.
        head = data[:end]
        raw = head.split(b"\r\n")
        nl = len(raw) - 1
        if nl and head.count(b"\n") == nl and head.count(b"\r") == nl:
            message = _parse_plain(data, stream, head, raw, end + 4)
            if message is not None:
                return message
    start, head_end, body_start = _split_head(data, stream)
    return _parse_lines(data, stream, start, head_end, body_start)


def _parse_plain(
    data: bytes, stream: bool, head: bytes, raw: list[bytes], body_start: int
) -> Request | Response | None:
    """A header section with CRLF line ends throughout, or None when a line is not
    ``token *WSP ":" value`` (then ``_parse_lines`` reads it all again, and says why).

    A folded line starts with a blank, so its "name" is no token and it goes there too.
    CR and LF decode to themselves and nothing else decodes to them (UTF-8 continuation
    bytes are never ASCII; surrogateescape gives surrogates), so the decoded text has the
    lines of the bytes.  The lines are read by list comprehensions and ``map`` over the
    whole section rather than a loop with a step per line: that is most of the parse.
    """
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    parts = [line.partition(":") for line in lines[1:]]
    names = list(map(_FIRST, parts))
    found = list(map(_KEY_OF.get, names))
    if not all(map(_SECOND, parts)):
        return None
    if None in found and not _resolve_names(parts, names, found):
        return None
    keys = cast(list[str], found)
    values = [p[2].strip(" \t") for p in parts]
    index: dict[str, tuple[str, ...]] = {k: (v,) for k, v in zip(keys, values, strict=True)}
    if len(index) != len(keys):
        index = build_index(keys, values)
    try:  # (``_build_salvaging``, one call less)
        return _build(data, stream, raw, lines[0], keys, names, values, index, body_start)
    except SipParseError as e:
        if not e.partial:
            e.partial = _salvage(keys, values)
        raise


def _resolve_names(
    parts: list[tuple[str, str, str]], names: list[str], keys: list[str | None]
) -> bool:
    """Fill in the keys of the names ``_KEY_OF`` does not know; False when a line is not
    ``token *WSP ":" value`` (``_parse_lines`` then reads it all again, and says why)."""
    for i, key in enumerate(keys):
        if key is None:
            name = parts[i][0].rstrip(" \t")
            if _TOKEN_RE.fullmatch(name) is None:
                return False
            names[i] = name
            low = name.lower()
            keys[i] = _COMPACT.get(low, low)
    return True


def _parse_lines(
    data: bytes, stream: bool, start: int, head_end: int, body_start: int
) -> Request | Response:
    """The general case: bare LF line ends, folded lines, malformed lines."""
    raw, text, folded = _header_lines(data[start:head_end])

    keys: list[str] = []
    names: list[str] = []
    values: list[str] = []
    for line in text[1:]:
        c = line.find(":")
        if c <= 0:
            raise SipParseError("Malformed header line", partial=_salvage(keys, values))
        name = line[:c]
        if name[-1] in " \t":
            name = name.rstrip(" \t")
        low = name.lower()
        keys.append(_COMPACT.get(low, low))
        names.append(name)
        value = line[c + 1 :]
        if folded and "\n" in value:
            value = _unfold(value)
        values.append(value.strip(" \t"))
    if names and _TOKENS_RE.fullmatch("".join(names)) is None:
        raise SipParseError("Bad header field name", partial=_salvage(keys, values))
    index = build_index(keys, values)
    return _build_salvaging(data, stream, raw, text[0], keys, names, values, index, body_start)


def _build_salvaging(
    data: bytes,
    stream: bool,
    raw: list[bytes],
    line: str,
    keys: list[str],
    names: list[str],
    values: list[str],
    index: dict[str, tuple[str, ...]],
    body_start: int,
) -> Request | Response:
    try:
        return _build(data, stream, raw, line, keys, names, values, index, body_start)
    except SipParseError as e:
        if not e.partial:
            e.partial = _salvage(keys, values)
        raise


def _build(
    data: bytes,
    stream: bool,
    raw: list[bytes],
    line: str,
    keys: list[str],
    names: list[str],
    values: list[str],
    index: dict[str, tuple[str, ...]],
    body_start: int,
) -> Request | Response:
    # -- body framing
    rest_len = len(data) - body_start
    cl_values = index.get("content-length")
    cl: int | None = None
    if cl_values is None:
        if stream:
            raise SipParseError("Missing Content-Length") from None
        body = data[body_start:]
    else:
        if len(cl_values) > 1:
            raise SipParseError("Multiple Content-Length header fields")
        cl_text = cl_values[0]
        if not (0 < len(cl_text) <= 10 and cl_text.isascii() and cl_text.isdigit()):
            raise SipParseError("Bad Content-Length")
        cl = int(cl_text)
        if cl > rest_len:
            raise SipParseError("Incomplete body" if stream else "Content-Length too large")
        if stream and cl < rest_len:
            raise SipParseError("Octets after message body")
        body = data[body_start:] if cl == rest_len else data[body_start : body_start + cl]

    # The Content-Length just read is what the message's ``content_length`` gives (the
    # same digits, read once).
    lines = cast("list[bytes | None]", raw[1:])  # received lines: bytes, never None
    headers = Headers._from_wire(keys, names, values, lines, index, {"content-length": cl})
    start = raw[0]
    response = _status_line_cache.get(line)
    if response is not None:
        return Response._from_wire(*response, headers, body, start)
    request = _request_line_cache.get(line)
    if request is not None:
        return Request._from_wire(*request, headers, body, start)
    if line[:4].upper() == "SIP/":
        m = _STATUS_LINE_RE.fullmatch(line)
        if m is None:
            raise SipParseError("Bad Status-Line")
        version, status_text, reason = m.groups()
        if version.upper() != g.SUPPORTED_VERSION:
            raise SipParseError("Version Not Supported", 505)
        status = int(status_text)
        if not 100 <= status <= 699:  # RFC 4475 bigcode: classes are 1xx to 6xx
            raise SipParseError("Bad Status-Code")
        response = (status, reason or "", version)
        _remember(_status_line_cache, line, response)
        return Response._from_wire(*response, headers, body, start)
    m = _REQUEST_LINE_RE.fullmatch(line)
    if m is None:
        raise SipParseError("Bad Request-Line")
    method, uri_text, version = m.groups()
    if version.upper() != g.SUPPORTED_VERSION:
        raise SipParseError("Version Not Supported", 505)
    uri = parse_uri(uri_text)
    if isinstance(uri, SipURI):
        if uri.headers:
            # RFC 3261 19.1.1 table: headers are not allowed in a Request-URI (RFC 4475
            # escruri).
            raise SipParseError("Headers not allowed in Request-URI")
        # (Kept for the URI types that compare by value, as the other parse caches.)
        _remember(_request_line_cache, line, (method, uri, version))
    return Request._from_wire(method, uri, version, headers, body, start)


#: Start lines read before, by their text: ``SIP/2.0 200 OK``, ``SIP/2.0 180 Ringing``, and
#: the Request-Line of an ACK or BYE to a gateway's Contact, recur call after call.  Only
#: well-formed ones are kept (the values are immutable), and each cache is emptied when
#: full, which bounds what a peer can make us hold.
_START_LINES_SIZE: Final = 4096
_status_line_cache: dict[str, tuple[int, str, str]] = {}
_request_line_cache: dict[str, tuple[str, URI, str]] = {}


def _remember(cache: dict[str, T], line: str, value: T) -> None:
    if len(line) > CACHED_TEXT_MAX:
        return
    if len(cache) >= _START_LINES_SIZE:
        cache.clear()
    cache[line] = value


def _salvage(keys: list[str], values: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (_PARTIAL_NAMES[k], v) for k, v in zip(keys, values, strict=False) if k in _PARTIAL_NAMES
    )


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    ``stream=False`` (UDP): ``data`` is one datagram.  ``stream=True`` (TCP/TLS): ``data``
    is exactly one message as delimited by ``frame_length``; Content-Length is required.
    Raises SipParseError, and only that, for malformed input; its ``partial`` carries the
    Via/From/To/Call-ID/CSeq lines read so far for a stateless 400.
    """
    return _parse(bytes(data), stream)


def frame_length(buffer: bytes, max_header: int = 65536) -> int | None:
    """Length of the first complete message in a stream buffer, None if more is needed.

    Leading CRLFs (keep-alives, RFC 5626 3.5.1) count towards the length, so the caller
    can slice them off with the message.  Raises SipParseError when the stream cannot be
    resynchronised (missing or bad Content-Length, header section over ``max_header``):
    the connection should then be closed (RFC 4475 ncl, mcl01).
    """
    start = 0
    n = len(buffer)
    while start < n and buffer[start] in (10, 13):
        start += 1
    end = buffer.find(b"\r\n\r\n", start)
    if end < 0:
        if n - start > max_header:
            raise SipParseError("Header section too large")
        return None
    body_start = end + 4
    length = stream_content_length(buffer[start:end])
    if n - body_start < length:
        return None
    return body_start + length


def stream_content_length(header: bytes) -> int:
    """The Content-Length of a stream message's header section (start line included, the
    final CRLFCRLF not): the full or compact (``l``) name, 1 to 10 digits, exactly once.

    Raises SipParseError otherwise: without a trustworthy length a stream cannot be cut
    into messages again (RFC 4475 ncl, mcl01). ``frame_length`` and the transport's
    incremental framer both frame by it.
    """
    length: int | None = None
    for line in header.split(b"\r\n")[1:]:
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip(b" \t").lower()
        if name in (b"content-length", b"l"):
            value = line[colon + 1 :].strip(b" \t")
            if length is not None or not (0 < len(value) <= 10 and value.isdigit()):
                raise SipParseError("Bad Content-Length")
            length = int(value)
    if length is None:
        raise SipParseError("Missing Content-Length")
    return length
