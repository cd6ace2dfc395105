"""Checks a proxy makes once per received message, beyond what framing needs.

``parse_message`` only reads what every message needs (framing, start line, header
names); a proxy must also refuse requests whose essential fields are missing, repeated
or malformed before it matches transactions or routes (RFC 3261 8.2, 16.3; RFC 4475
insuf, multi01, mismatch01, scalar02, badinv01, quotbal, baddn, badaspec, regbadct).
The refusal is a value, ``(status, reason)``, per DESIGN.md: the caller answers it
(requests) or drops the message (responses).
"""

from __future__ import annotations

from typing import Final

from . import grammar as g
from .errors import SipParseError
from .fields import (
    CSeq,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_via,
    parse_via_list,
)
from .headers import _Forced
from .message import (
    Message,
    Request,
    Response,
    _contacts,
    _content_length_value,
    _first_cseq,
    _first_name_addr,
    _max_forwards_value,
    _parse_content_length,
    _parse_max_forwards,
)
from .uri import AbsoluteURI

__all__ = ["SUPPORTED_SCHEMES", "validate_request", "validate_response"]

SUPPORTED_SCHEMES: Final = frozenset({"sip", "sips", "tel"})

# RFC 3261 8.1.1: "A valid SIP request formulated by a UAC MUST, at a minimum, contain
# the following header fields: To, From, CSeq, Call-ID, Max-Forwards, and Via".
# Max-Forwards is not required here: a proxy adds it when absent (16.6 step 3), and
# RFC 2543 clients (RFC 4475 inv2543) do not send it.
_MANDATORY: Final = (
    ("via", "Via"),
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
)
# The single-valued fields of grammar.SINGLE_HEADERS, in the order they are checked (so
# the reason given for RFC 4475 multi01 is the same on every run).
_LABELS: Final = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "from": "From",
    "to": "To",
    "max-forwards": "Max-Forwards",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
}


# What the list parses below give for a field of one line holding one value, without
# gathering that value into a list first.
def _one_via(value: str) -> tuple[Via, ...]:
    return (parse_via(value),)


def _one_name_addr(value: str) -> tuple[NameAddr, ...]:
    return (parse_name_addr(value),)


def _one_contact(value: str) -> tuple[NameAddr, ...]:
    return () if value == "*" else (parse_name_addr(value),)


# In the order they are parsed (a message with several malformed fields is refused for the
# first of them), each with the parse of its property, the value that parse gives when the
# field is absent, and the parse of a single value that gives what it gives for one line.
_FORCED: Final[tuple[_Forced, ...]] = (
    ("via", parse_via_list, (), _one_via),
    ("from", _first_name_addr, None, parse_name_addr),
    ("to", _first_name_addr, None, parse_name_addr),
    ("cseq", _first_cseq, None, parse_cseq),
    ("max-forwards", _parse_max_forwards, None, _max_forwards_value),
    ("contact", _contacts, _contacts([]), _one_contact),
    ("record-route", parse_name_addr_list, (), _one_name_addr),
    ("content-length", _parse_content_length, None, _content_length_value),
)
_FORCED_REQUEST: Final = (*_FORCED, ("route", parse_name_addr_list, (), _one_name_addr))
_MANDATORY_KEYS: Final = frozenset(key for key, _ in _MANDATORY)


def _common(msg: Message, forced: tuple[_Forced, ...] = _FORCED) -> tuple[int, str] | None:
    headers = msg.headers
    lines = headers._line_index()  # each field's lines: presence and repeats at a look-up each
    if not lines.keys() >= _MANDATORY_KEYS:
        for key, label in _MANDATORY:
            if key not in lines:
                return 400, f"Missing {label} header"
    if len(lines) != len(headers):  # some field has several lines
        for key, label in _LABELS.items():
            found = lines.get(key)
            if found is not None and len(found) > 1:
                return 400, f"Multiple {label} headers"
    if g.CALLID_RE.fullmatch(lines["call-id"][0]) is None:  # what ``msg.call_id`` gives
        return 400, "Bad Call-ID header"
    # Force the lazy parsers over everything a proxy reads or forwards with meaning, with
    # the parse functions of the message's properties: the parsed values are cached on the
    # message.
    headers._parse_all(forced)
    # An empty Via list cannot come from a Via line (each of its elements is parsed or
    # refused), so this refuses what it did when it came before the other parses.
    if not headers._cache["via"]:
        return 400, "Missing Via header"
    return None


def validate_request(
    req: Request, *, schemes: frozenset[str] = SUPPORTED_SCHEMES
) -> tuple[int, str] | None:
    """The refusal ``(status, reason)`` a proxy must send for this request, or None.

    400 for missing, repeated or malformed essential fields and a CSeq method that is
    not the request's (RFC 4475 mismatch01/02: 400 is allowed for both); 416 when the
    Request-URI scheme is not in ``schemes`` (RFC 3261 8.2.2.1; RFC 4475 unkscm, novelsc).
    Max-Forwards of 0 (483), Proxy-Require (420) and routing questions are the proxy's.
    """
    try:
        refusal = _common(req, _FORCED_REQUEST)  # Route too, after the others
        if refusal is not None:
            return refusal
        cseq = req.headers._cache["cseq"]  # what ``req.cseq`` gives: parsed just now
        if isinstance(cseq, CSeq) and cseq.method != req.method:
            return 400, "CSeq method mismatch"
    except SipParseError as e:
        return e.status, e.reason
    uri = req.uri
    if isinstance(uri, AbsoluteURI) or uri.scheme.lower() not in schemes:
        return 416, "Unsupported URI Scheme"
    return None


def validate_response(resp: Response) -> tuple[int, str] | None:
    """Why a received response must be dropped (status and reason for the log), or None.

    A proxy never answers a response; RFC 4475 scalarlg (CSeq over 2**32 - 1) is dropped.
    """
    try:
        return _common(resp)
    except SipParseError as e:
        return e.status, e.reason
