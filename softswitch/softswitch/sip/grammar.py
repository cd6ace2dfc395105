"""RFC 3261 section 25 ABNF, as the compiled regexes and tables the parsers use.

Kept in one place, with the RFC text quoted beside each piece, so a reviewer can check a
pattern against the grammar without reading the parsers (model: h11's ``_abnf.py``).
Patterns work on *unfolded* header values: the message parser has already replaced each
``CRLF 1*(SP / HTAB)`` by a space, so LWS reduces to ``[ \\t]+`` and SWS to ``[ \\t]*``.

Where this module is more liberal than the ABNF, the comment says so and why (RFC 4475
and RFC 5118 ask receivers to tolerate those constructs).

Every pattern here must take time linear in the text it reads, because a peer chooses that
text (up to 64 KiB of it).  So each is applied anchored (``match`` at a known position or
``fullmatch``, never ``search`` or ``sub``, which retry from every position: an unanchored
pattern that opens with a repeat, such as ``[ \\t]*\\r?\\n[ \\t]+``, is quadratic on a long
run of blanks, which is why the parser unfolds lines without one).  Where two repeats
meet, they accept disjoint characters (token and LWS, ``;`` or ``=`` between parameter
characters, ``"`` and ``\\`` in quoted strings) or the second is bounded (the last
character of a domain label, ``[0-9]{1,3}`` of a dotted quad), so a failing match
revisits each character a bounded number of times.  The loops over GENERIC_PARAM_RE and
AUTH_PARAM_RE start each match where the previous one ended, and a match reads past its
own end only when the next one fails and ends the loop.
"""

from __future__ import annotations

import re
from typing import Final

# ---------------------------------------------------------------------------------------
# Basic rules (RFC 3261 25.1)
#
#   alphanum  =  ALPHA / DIGIT
#   LWS  =  [*WSP CRLF] 1*WSP ; linear whitespace
#   SWS  =  [LWS] ; sep whitespace
#   HCOLON  =  *( SP / HTAB ) ":" SWS
#   token       =  1*(alphanum / "-" / "." / "!" / "%" / "*"
#                  / "_" / "+" / "`" / "'" / "~" )
#   quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext         =  LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair  =  "\" (%x00-09 / %x0B-0C / %x0E-7F)
# ---------------------------------------------------------------------------------------

TOKEN_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
SWS: Final = r"[ \t]*"
LWS: Final = r"[ \t]+"
# qdtext excludes '"' and '\'; quoted-pair excludes CR and LF (which cannot occur in an
# unfolded value anyway).  Non-ASCII is accepted as UTF8-NONASCII without checking the
# UTF-8 structure: the value has already been decoded with surrogateescape.
QUOTED_STRING: Final = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'

TOKEN_RE: Final = re.compile(TOKEN)
QUOTED_STRING_RE: Final = re.compile(QUOTED_STRING)

# ---------------------------------------------------------------------------------------
# Start lines (RFC 3261 25.1)
#
#   Request-Line   =  Method SP Request-URI SP SIP-Version CRLF
#   Status-Line     =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
#   SIP-Version    =  "SIP" "/" 1*DIGIT "." 1*DIGIT
#   Status-Code     =  ... / extension-code ;  extension-code  =  3DIGIT
#   Reason-Phrase   =  *(reserved / unreserved / escaped
#                      / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
#
# Exactly one SP between the elements: RFC 4475 lwsstart and trws are invalid because of
# extra or trailing spaces.  "SIP" is case-insensitive, as every ABNF literal is.
# The reason phrase is taken as any text without CR/LF (liberal: RFC 4475 unreason carries
# UTF-8), and may be empty (RFC 4475 noreason, "SIP/2.0 100 ").
# ---------------------------------------------------------------------------------------

SIP_VERSION: Final = r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+"
REQUEST_LINE_RE: Final = re.compile(rf"({TOKEN}) ([^ \t]+) ({SIP_VERSION})")
STATUS_LINE_RE: Final = re.compile(rf"({SIP_VERSION}) ([0-9]{{3}})(?: ([^\r\n]*))?")
SUPPORTED_VERSION: Final = "SIP/2.0"

# ---------------------------------------------------------------------------------------
# Header field names (RFC 3261 7.3, 7.3.3, 20)
#
#   message-header  =  (... / extension-header) CRLF
#   header-name       =  token
#   HCOLON  =  *( SP / HTAB ) ":" SWS
#
# "SIP provides a mechanism to represent common header field names in an abbreviated
# form" (7.3.3).  The table holds RFC 3261's compact forms and the ones later RFCs
# registered with IANA, mapped to the lower-case long name used as the key everywhere.
# ---------------------------------------------------------------------------------------

COMPACT_FORMS: Final[dict[str, str]] = {
    "a": "accept-contact",  # RFC 3841
    "b": "referred-by",  # RFC 3892
    "c": "content-type",
    "d": "request-disposition",  # RFC 3841
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",  # RFC 3841
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",  # RFC 4474
    "o": "event",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "s": "subject",
    "t": "to",
    "u": "allow-events",  # RFC 6665
    "v": "via",
    "x": "session-expires",  # RFC 4028
    "y": "identity",  # RFC 4474
}

# How a header we add or modify is spelled on the wire; unknown names keep the spelling
# the caller gave.
CANONICAL_NAMES: Final[dict[str, str]] = {
    n.lower(): n
    for n in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "History-Info",
        "Identity",
        "Identity-Info",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Priority",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reject-Contact",
        "Remote-Party-ID",
        "Reply-To",
        "Request-Disposition",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Service-Route",
        "Session-Expires",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

# Header fields whose grammar is  ``name HCOLON x *(COMMA x)``, so that several values may
# be combined on one line (RFC 3261 7.3.1).  Authorization, Proxy-Authorization,
# WWW-Authenticate and Proxy-Authenticate are NOT here: their commas separate
# parameters, and each field line carries one credential or challenge.
LIST_HEADERS: Final = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "privacy",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

# Header fields that may appear at most once in a request (RFC 3261 7.3.1 and the
# "where/proxy" table of 20): RFC 4475 multi01 repeats them and must be refused.
SINGLE_HEADERS: Final = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type"}
)

# ---------------------------------------------------------------------------------------
# URIs (RFC 3261 25.1, 19.1.1)
#
#   SIP-URI          =  "sip:" [ userinfo ] hostport uri-parameters [ headers ]
#   userinfo         =  ( user / telephone-subscriber ) [ ":" password ] "@"
#   user             =  1*( unreserved / escaped / user-unreserved )
#   user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
#   password         =  *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
#   unreserved  =  alphanum / mark
#   mark        =  "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
#   escaped     =  "%" HEXDIG HEXDIG
#   hostport         =  host [ ":" port ]
#   host             =  hostname / IPv4address / IPv6reference
#   hostname         =  *( domainlabel "." ) toplabel [ "." ]
#   domainlabel      =  alphanum / alphanum *( alphanum / "-" ) alphanum
#   IPv6reference  =  "[" IPv6address "]"
#   uri-parameter     =  transport-param / user-param / method-param
#                        / ttl-param / maddr-param / lr-param / other-param
#   other-param       =  pname [ "=" pvalue ]
#   pname             =  1*paramchar
#   paramchar         =  param-unreserved / unreserved / escaped
#   param-unreserved  =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
#   headers         =  "?" header *( "&" header )
#   header          =  hname "=" hvalue
#   hname           =  1*( hnv-unreserved / unreserved / escaped )
#   hvalue          =  *( hnv-unreserved / unreserved / escaped )
#   hnv-unreserved  =  "[" / "]" / "/" / "?" / ":" / "+" / "$"
#
# The user part is taken liberally in one respect: an unescaped "#" is accepted.  RFC 3261
# reserves it (it must be sent as %23), but customer equipment in the field (VOS3000-style
# "mapping gateways") sends tech prefixes such as 1234#44... unescaped, and refusing them
# would refuse the customer's every call.  "#" is accepted nowhere else (not in the
# password, host, parameters or headers), and a URI keeps it as written (it means the same
# as %23: comparison unescapes both); URIs the switch builds escape it (uri.escape).  "*"
# needs no such exception: it is a mark, legal unescaped.
#
# hostname is taken liberally: a label may start with a digit (so IPv4address is a
# hostname too) and the top label is not checked for a leading letter.  IPv6address is
# hex digits, colons and an optional trailing dotted quad: RFC 5118 4.10 asks receivers
# to tolerate "2001:db8:::192.0.2.1", which RFC 3261's ABNF allows and RFC 4291 does not.
# ---------------------------------------------------------------------------------------

ESCAPED: Final = r"%[0-9A-Fa-f]{2}"
UNRESERVED: Final = r"A-Za-z0-9\-_.!~*'()"
# "#" is the one character beyond the ABNF (see above).
USER_LIBERAL: Final = "#"
USER_RE: Final = re.compile(rf"(?:[{UNRESERVED}&=+$,;?/{USER_LIBERAL}]|{ESCAPED})+")
PASSWORD_RE: Final = re.compile(rf"(?:[{UNRESERVED}&=+$,]|{ESCAPED})*")
PARAMCHARS: Final = rf"(?:[{UNRESERVED}\[\]/:&+$]|{ESCAPED})+"
URI_PARAM_RE: Final = re.compile(rf"({PARAMCHARS})(?:=({PARAMCHARS}))?")
HNV: Final = rf"(?:[{UNRESERVED}\[\]/?:+$]|{ESCAPED})"
URI_HEADER_RE: Final = re.compile(rf"({HNV}+)=({HNV}*)")
DOMAINLABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
HOSTNAME: Final = rf"{DOMAINLABEL}(?:\.{DOMAINLABEL})*\.?"
IPV6_REFERENCE: Final = r"\[[0-9A-Fa-f]*:[0-9A-Fa-f:]*(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?\]"
HOST: Final = rf"(?:{HOSTNAME}|{IPV6_REFERENCE})"
HOSTPORT_RE: Final = re.compile(rf"({HOST})(?::([0-9]{{1,5}}))?")
# IPv6address without brackets, for via-received (RFC 3261 25.1:
# via-received = "received" EQUAL (IPv4address / IPv6address)).
IPV6_ADDRESS_RE: Final = re.compile(r"[0-9A-Fa-f]*:[0-9A-Fa-f:]*(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?")

# The common shape of a SIP URI in one pattern: userinfo without the rarer
# user-unreserved characters (";", "?", "/"), no headers.  Only a speed-up: whatever it
# does not match goes through the general, piecewise parse, which gives the same result
# for everything this matches.
SIP_URI_COMMON_RE: Final = re.compile(
    rf"(?:((?:[{UNRESERVED}&=+$,{USER_LIBERAL}]|{ESCAPED})+)"
    rf"(?::((?:[{UNRESERVED}&=+$,]|{ESCAPED})*))?@)?"
    rf"({HOST})(?::([0-9]{{1,5}}))?((?:;{PARAMCHARS}(?:={PARAMCHARS})?)*)"
)

#   absoluteURI    =  scheme ":" ( hier-part / opaque-part )
#   scheme         =  ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
# The rest of an absoluteURI is kept opaque, but must be made of uric characters
# (no spaces, quotes, angle brackets, which would make framing ambiguous).
SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
URIC_RE: Final = re.compile(rf"(?:[{UNRESERVED};/?:@&=+$,\[\]]|{ESCAPED})+")

#   telephone-subscriber (RFC 3966):  global-number / local-number, then ;par
# Checked loosely: visual separators, digits, '*', '#', hex for local numbers.
TEL_NUMBER_RE: Final = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")

# ---------------------------------------------------------------------------------------
# Header field values (RFC 3261 25.1)
#
#   via-parm          =  sent-protocol LWS sent-by *( SEMI via-params )
#   sent-protocol     =  protocol-name SLASH protocol-version SLASH transport
#   sent-by           =  host [ COLON port ]
#   SLASH = SWS "/" SWS ; SEMI = SWS ";" SWS ; EQUAL = SWS "=" SWS ; COLON = SWS ":" SWS
#   generic-param  =  token [ EQUAL gen-value ]
#   gen-value      =  token / host / quoted-string
#   CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
#   Max-Forwards  =  "Max-Forwards" HCOLON 1*DIGIT
#   Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
# ---------------------------------------------------------------------------------------

SENT_PROTOCOL_RE: Final = re.compile(
    rf"({TOKEN}){SWS}/{SWS}({TOKEN}){SWS}/{SWS}({TOKEN}){LWS}({HOST})(?:{SWS}:{SWS}([0-9]{{1,5}}))?"
)
# A gen-value: token, host (an IPv6 reference, or a bare IPv6address for received, which
# RFC 5118 4.5 shows unbracketed) or quoted-string.
GEN_VALUE: Final = rf"(?:{QUOTED_STRING}|{IPV6_REFERENCE}|[A-Za-z0-9\-.!%*_+`'~:]+)"
GENERIC_PARAM_RE: Final = re.compile(rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({GEN_VALUE}))?{SWS}")
CSEQ_RE: Final = re.compile(rf"([0-9]+){LWS}({TOKEN})")

# The common shapes of those values in one pattern each: no blanks around the separators,
# ``SIP/2.0`` as the protocol, parameter values that are neither quoted strings nor IPv6
# references.  Only a speed-up: whatever they do not match goes through the general
# patterns above (SENT_PROTOCOL_RE, GENERIC_PARAM_RE), which read everything these match
# to the same groups.  The parameter names and values exclude ";" and "=", so splitting a
# match at those gives the parameters back.
PLAIN_PARAM_VALUE: Final = r"[A-Za-z0-9\-.!%*_+`'~:]+"
PLAIN_PARAMS: Final = rf"(?:;{TOKEN}(?:={PLAIN_PARAM_VALUE})?)*"
PLAIN_PARAMS_RE: Final = re.compile(PLAIN_PARAMS)
VIA_COMMON_RE: Final = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ({HOST})(?::([0-9]{{1,5}}))?({PLAIN_PARAMS})"
)
DIGITS_RE: Final = re.compile(r"[0-9]+")
# RFC 3261 8.1.1.5: "The sequence number value MUST be expressible as a 32-bit unsigned
# integer"; RFC 4475 scalar02 is invalid for exceeding 2**32 - 1.
CSEQ_MAX: Final = 2**32 - 1

#   name-addr      =  [ display-name ] LAQUOT addr-spec RAQUOT
#   display-name   =  *(token LWS)/ quoted-string
#   LAQUOT  =  SWS "<"; RAQUOT  =  ">" SWS
# An unquoted display name directly followed by "<" (RFC 4475 lwsdisp) is accepted.
DISPLAY_TOKENS_RE: Final = re.compile(rf"{TOKEN}(?:{LWS}{TOKEN})*")

#   challenge / credentials  =  auth-scheme LWS auth-param *(COMMA auth-param)
#   auth-param  =  auth-param-name EQUAL ( token / quoted-string )
AUTH_PARAM_RE: Final = re.compile(
    rf"{SWS}({TOKEN}){SWS}={SWS}({QUOTED_STRING}|{TOKEN}){SWS}(?:,|$)"
)

#   Call-ID  =  ( "Call-ID" / "i" ) HCOLON callid
#   callid   =  word [ "@" word ]
#   word        =  1*(alphanum / "-" / "." / "!" / "%" / "*" /
#                  "_" / "+" / "`" / "'" / "~" /
#                  "(" / ")" / "<" / ">" /
#                  ":" / "\" / DQUOTE /
#                  "/" / "[" / "]" / "?" /
#                  "{" / "}" )
WORD: Final = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
CALLID_RE: Final = re.compile(rf"{WORD}(?:@{WORD})?")
