"""Sans-I/O SIP: messages, transactions, dialogs and digest auth, with no sockets and no clock reads."""  # noqa: E501

from .errors import SipParseError
from .fields import (
    BRANCH_MAGIC_COOKIE,
    AuthHeader,
    CSeq,
    NameAddr,
    Reason,
    Via,
    make_branch,
    make_tag,
    parse_auth,
    parse_cseq,
    parse_name_addr,
    parse_reason,
    parse_via,
)
from .headers import Headers
from .message import REASON_PHRASES, Message, Request, Response
from .parser import frame_length, parse_message
from .uri import URI, AbsoluteURI, SipURI, TelURI, escape, parse_uri, unescape
from .validate import validate_request, validate_response

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "REASON_PHRASES",
    "URI",
    "AbsoluteURI",
    "AuthHeader",
    "CSeq",
    "Headers",
    "Message",
    "NameAddr",
    "Reason",
    "Request",
    "Response",
    "SipParseError",
    "SipURI",
    "TelURI",
    "Via",
    "escape",
    "frame_length",
    "make_branch",
    "make_tag",
    "parse_auth",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_reason",
    "parse_uri",
    "parse_via",
    "unescape",
    "validate_request",
    "validate_response",
]
