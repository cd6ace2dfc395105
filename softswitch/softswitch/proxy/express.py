"""The express lane: the usual ACK of an answered call relayed from its bytes.

Every answered call brings the caller's ACK for the 2xx, a request with no transaction of
its own that the switch only passes on along the dialog (``relay.InDialogRelay._relay_ack``).
Taken the full way it is parsed into a message (every header line indexed), validated,
matched against the transactions, looked up, copied, edited and printed again: some 280
Python calls for what comes down to taking our Route off, counting Max-Forwards down and
putting our Via on. Here the same ACK is read once from its bytes and relayed with those
three edits in about 130 calls: 38-41 µs of CPU instead of 54-59 in a whole call's flow
(``python benches/engine_call.py --by-message``, against ``--no-express``).

The lane takes only what it can take *exactly* as the full path would: the same bytes out,
to the same place, with the same effect on the call (its ACK timer stopped), and nothing
else. So it is narrow on purpose. An ACK qualifies when it is

- a datagram of the strict shape: CRLF line ends, no folded line, printable ASCII only,
  ``Name: value`` lines, no body, ``Content-Length: 0``;
- made of header fields the lane reads (``Via``, ``From``, ``To``, ``Call-ID``, ``CSeq``,
  ``Max-Forwards``, ``Content-Length``, ``Route``, each spelled as RFC 3261 spells it, one
  value per line, one line each but for ``Route``) and fields no part of the switch gives a
  meaning to (``User-Agent``, ``Subject``, ``X-...``: copied as they are). A compact form, a
  ``Contact``, an ``Authorization``, a second ``Via`` ... send it the full way;
- valid by the same field parsers the full path uses (``softswitch.sip.fields``), a ``sip:``
  Request-URI, a CSeq method of ACK;
- from the address its Via names, without ``rport`` (nothing to stamp on it);
- matched by no server transaction (a 2xx's ACK has a branch of its own; a non-2xx's is
  absorbed by its INVITE transaction, the full way);
- for the current dialog of an answered call whose media is not relayed (an ACK that must
  go through the media relay, or that finds no call, goes the full way).

Anything else returns False before anything happened, and the transport takes the full
path (so an IPv6 caller, whose Via host is bracketed, always does). What goes out is what the
full path's copy would print: the Request-Line printed anew from the parsed URI, our Route
entries off, Max-Forwards counted down (capped as ``forward`` caps it), our Via right above
the caller's, every other line as received. ``tests/softswitch/proxy/test_express_lane.py``
holds the lane to the full path: 2,000 seeded ACK variants through two calls of one switch,
the same datagrams to the same places, the same log records and counters, the same ACK
timers.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from softswitch.sip import SipParseError, SipURI, parse_uri
from softswitch.sip import grammar as g
from softswitch.sip.fields import parse_cseq, parse_name_addr, parse_via
from softswitch.sip.message import _max_forwards_value
from softswitch.transport import Flow, Transport

from .calls import Phase
from .core import EngineCore, logger
from .ending import stop_call_timer
from .forward import MAX_FORWARDS_LIMIT

__all__ = ["ExpressLane"]

#: Where the full path logs each message it receives and sends at DEBUG.
_TRANSPORT_LOG: Final = logging.getLogger("softswitch.transport")
#: A byte no header section of the lane's shape holds (anything but printable ASCII, CR, LF;
#: a CR or LF not in a CRLF is found once the section is split at its CRLFs).
_UNUSUAL: Final = re.compile(rb"[^\x20-\x7e\r\n]")
#: ``Name: value``: a token name, one space, a value with no white space at either end.
_FIELD: Final = re.compile(r"([A-Za-z0-9-]+): (\S(?:.*\S)?)")
#: The fields the lane reads, as RFC 3261 spells them.
_READ: Final = frozenset(
    {"Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Route"}
)
#: Fields the switch knows but gives no meaning to in an ACK's relay: copied as they are.
_INERT: Final = frozenset(
    {"user-agent", "subject", "server", "date", "organization", "allow", "supported"}
)


class ExpressLane(EngineCore):
    """The engine's part that relays from bytes; a mixin, as the other parts are, because it
    reads the same dialogs, transactions and Via the full path does."""

    def _express(self, data: bytes, flow: Flow) -> bool:
        """The transport's shortcut (``TransportLayer.shortcut``): relay ``data`` if it is an
        ACK the lane takes, else return False having changed nothing. Every check comes
        before the one side effect (the ACK timer, then the send), so declining late costs
        only time."""
        if not data.startswith(b"ACK ") or flow.transport is not Transport.UDP:
            return False
        if _TRANSPORT_LOG.isEnabledFor(logging.DEBUG) or logger.isEnabledFor(logging.DEBUG):
            return False  # the full path logs what it received and sent
        head, blank, body = data.partition(b"\r\n\r\n")
        if not blank or body or _UNUSUAL.search(head) is not None:
            return False
        lines = head.decode("ascii").split("\r\n")
        if any("\r" in line or "\n" in line for line in lines):
            return False  # a bare CR or LF: the parser refuses the message
        start = lines[0].split(" ")
        if len(start) != 3 or start[2] != "SIP/2.0" or "?" in start[1] or self.driver.closed:
            return False  # ("?": a Request-URI with headers, which the parser refuses)
        fields: dict[str, str] = {}
        routes: list[int] = []  # the Route lines' indexes in ``lines``
        max_forwards_at = via_at = 0
        for i in range(1, len(lines)):
            m = _FIELD.fullmatch(lines[i])
            if m is None:
                return False
            name, value = m.groups()
            if name in _READ:
                if name == "Route":
                    if "," in value:
                        return False
                    routes.append(i)
                    continue
                if name in fields:
                    return False
                fields[name] = value
                if name == "Max-Forwards":
                    max_forwards_at = i
                elif name == "Via":
                    via_at = i
            elif (low := name.lower()) not in _INERT and (
                low in g.CANONICAL_NAMES or low in g.COMPACT_FORMS
            ):
                return False  # a field some part of the switch reads: the full path
        if len(fields) != len(_READ) - 1:  # every field the lane reads but Route, once each
            return False
        via_text = fields["Via"]
        call_id = fields["Call-ID"]
        if "," in via_text or g.CALLID_RE.fullmatch(call_id) is None:
            return False
        try:
            uri = parse_uri(start[1])
            via = parse_via(via_text)
            from_tag = parse_name_addr(fields["From"]).tag
            to_tag = parse_name_addr(fields["To"]).tag
            cseq = parse_cseq(fields["CSeq"])
            max_forwards = _max_forwards_value(fields["Max-Forwards"])
            route_uris = [parse_name_addr(lines[i][7:]).uri for i in routes]
        except (SipParseError, ValueError):
            return False  # the full path refuses it, with its own reason
        if (
            not isinstance(uri, SipURI)
            or uri.scheme.lower() != "sip"
            or cseq.method != "ACK"
            or fields["Content-Length"] != "0"  # as written: a copy reframes "00" as "0"
            or to_tag is None
        ):
            return False
        # What the transport would stamp on the Via: nothing, or the full path does it.
        if via.rport is not None or via.host != flow.remote[0]:  # (the remote is an IP)
            return False
        if self.transactions.serves(via, "ACK") is not False:
            return False  # an INVITE's transaction absorbs it, or legacy matching: full path
        # The dialog, as ``Dispatch._find_dialog`` and ``relay._current_dialog`` find it.
        from_caller = True
        call = self._dialogs.get((call_id, from_tag or ""))
        if call is None:
            from_caller = False
            call = self._dialogs.get((call_id, to_tag))
        if call is None or call.callee_flow is None or call.media is not None:
            return False
        if call.phase is not Phase.ANSWERED:
            return False
        if call.callee_tag != (to_tag if from_caller else from_tag):
            return False
        dest = call.callee_flow if from_caller else call.caller_flow
        # Our Routes off (``forward._strip_own_routes``): the leading ones that name us.
        own = 0
        for route in route_uris:
            if not isinstance(route, SipURI) or not self.is_ours(
                route.host.strip("[]"), route.port or 5060
            ):
                break
            own += 1
        # The edits ``forward.prepare_in_dialog`` makes, on a copy whose Request-Line is
        # printed anew (``Request.copy``: repeated URI parameters and a port's leading
        # zeros do not survive it).
        lines[0] = f"ACK {uri} SIP/2.0"
        lines[max_forwards_at] = (
            f"Max-Forwards: {min(max(max_forwards - 1, 0), MAX_FORWARDS_LIMIT)}"
        )
        # Our Via right above the caller's, where ``Headers.prepend`` puts it.
        lines[via_at] = f"Via: {self._our_via(dest)}\r\n{lines[via_at]}"
        for i in reversed(routes[:own]):
            del lines[i]
        out = [*lines, "", ""]
        wire = "\r\n".join(out).encode("ascii")
        if len(wire) > self.transport.limits.max_message_size:
            return False
        if from_caller and call.ack_timer is not None:
            stop_call_timer(call, "ack_timer")
        self.transport.send_bytes(dest, wire)
        return True
