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
from .fields import parse_name_addr_list, parse_via_list
from .message import Message, Request, Response, _contacts
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


def _common(msg: Message) -> tuple[int, str] | None:
    counts = msg.headers.key_counts()
    for key, label in _MANDATORY:
        if key not in counts:
            return 400, f"Missing {label} header"
    for key, label in _LABELS.items():
        if counts.get(key, 0) > 1:
            return 400, f"Multiple {label} headers"
    call_id = msg.call_id or ""
    if g.CALLID_RE.fullmatch(call_id) is None:
        return 400, "Bad Call-ID header"
    # Force the lazy parsers over everything a proxy reads or forwards with meaning (the
    # parsed values are cached on the message, and the list-valued ones read here without
    # the defensive copy their properties make).
    headers = msg.headers
    if not headers.parsed("via", parse_via_list):
        return 400, "Missing Via header"
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    msg.cseq  # noqa: B018
    msg.max_forwards  # noqa: B018
    headers.parsed("contact", _contacts)
    headers.parsed("record-route", parse_name_addr_list)
    msg.content_length  # noqa: B018
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
        refusal = _common(req)
        if refusal is not None:
            return refusal
        req.headers.parsed("route", parse_name_addr_list)
        cseq = req.cseq
        if cseq is not None and cseq.method != req.method:
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
