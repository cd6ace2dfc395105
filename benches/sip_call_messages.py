"""What the SIP message layer costs per call: the six messages a switch receives in one call.

The messages are those of a real call through the switch (an SIPp caller and callee on
loopback): the INVITE, the 180 and 200 for it, the ACK, the BYE and the 200 for the BYE.
For each one the script times the work the transport and the proxy do with the SIP layer:
``parse_message``, ``validate_request``/``validate_response``, reading the fields the
proxy reads, then the copy a proxy forwards (Max-Forwards decremented and our Via pushed
for a request, the top Via popped for a response) serialised with ``bytes()``.

Every call of a run gets its own Call-ID, tags and branches, and the parse caches of
``softswitch.sip`` (``fields``, ``parser``, ``uri``) are emptied before each repeat, so the
figures include the parsing a new call really costs (a message repeated verbatim would find
every value in those caches); ``--hot`` times that verbatim repetition instead. The figure
is the best of several repeats, in µs per message, and their sum: the SIP layer's share of
one call's CPU. The machine's other load shows as noise of a few per cent between runs.

    python benches/sip_call_messages.py [--calls 300] [--repeats 15] [--hot] [--relay]

``--relay`` times the proxy's per-hop work instead, on messages already parsed, checked and
read (as the transaction layer leaves them): the branch INVITE (``prepare_branch``), the
``100 Trying`` (``Response.for_request``), the relayed 180, 200 and 200 for the BYE
(``relay_response``), the relayed ACK and BYE (``prepare_in_dialog``), each with the
``bytes()`` the transport sends and the fields the transaction layer and transport then
read of it (top Via, CSeq, Call-ID), in µs per call.

A standalone script, not a pytest test (its name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

from softswitch.proxy import forward
from softswitch.sip import Request, Response, SipURI, Via, parse_message
from softswitch.sip import fields as _fields
from softswitch.sip import parser as _parser
from softswitch.sip import uri as _uri
from softswitch.sip.validate import validate_request, validate_response
from softswitch.transport import Transport

# The six datagrams the switch received in one call (captured, unedited), from tests/
# (after the imports above: its softswitch/ folder of tests would shadow the package).
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from captured_call import ACK_IN as ACK
from captured_call import BYE_IN as BYE
from captured_call import BYE_OK_IN as OK_BYE
from captured_call import INVITE_IN as INVITE
from captured_call import OK_IN as OK_INVITE
from captured_call import RINGING_IN as RINGING

CALL: tuple[tuple[str, bytes], ...] = (
    ("INVITE", INVITE),
    ("180", RINGING),
    ("200 INVITE", OK_INVITE),
    ("ACK", ACK),
    ("BYE", BYE),
    ("200 BYE", OK_BYE),
)


def call_variant(n: int) -> list[bytes]:
    """The call's messages with the identifiers of call ``n``: its own Call-ID, tags and
    branches (the switch's branches too), as consecutive calls of a load run have."""
    subs = (
        (b"32551-48-", f"32551-{n}-".encode()),
        (b"48-32551@", f"{n}-32551@".encode()),
        (b"SIPpTag0048", f"SIPpTag{n:04d}".encode()),
        (b"SIPpTag0148", f"SIPpTag1{n:04d}".encode()),
        (b"z9hG4bK66b90893025a01ac", f"z9hG4bK{n * 7919:016x}".encode()),
        (b"z9hG4bK20a570b4f37373a3", f"z9hG4bK{n * 7907:016x}".encode()),
    )
    out = []
    for _, data in CALL:
        for old, new in subs:
            data = data.replace(old, new)
        out.append(data)
    return out


OUR_VIA = Via.new("UDP", "127.0.0.1", 39585, branch="z9hG4bK0123456789abcdef")
#: Our Via as the proxy passes it (header text, made once per sent-by: ``Proxy._our_via``).
OUR_VIA_TEXT = str(OUR_VIA)


def on_request(data: bytes) -> bytes:
    """The SIP-layer work on a received request: the transport's parse and check, the
    fields the transaction layer and proxy read, and the copy it forwards."""
    msg = parse_message(data)
    assert isinstance(msg, Request)
    if validate_request(msg) is not None:
        raise AssertionError("refused")
    msg.top_via  # noqa: B018
    msg.call_id  # noqa: B018
    msg.cseq  # noqa: B018
    msg.from_tag  # noqa: B018
    msg.to_tag  # noqa: B018
    msg.max_forwards  # noqa: B018
    msg.content_length  # noqa: B018
    msg.route  # noqa: B018
    msg.record_route  # noqa: B018
    out = Request(msg.method, msg.uri, msg.headers.copy(), msg.body)
    out.headers.get("Route")
    current = out.max_forwards
    out.max_forwards = 70 if current is None else max(current - 1, 0)
    out.push_via(OUR_VIA)
    return bytes(out)


def on_response(data: bytes) -> bytes:
    """The same for a received response: parse, check, read, relay without our Via."""
    msg = parse_message(data)
    assert isinstance(msg, Response)
    if validate_response(msg) is not None:
        raise AssertionError("refused")
    msg.top_via  # noqa: B018
    msg.call_id  # noqa: B018
    msg.cseq  # noqa: B018
    msg.from_tag  # noqa: B018
    msg.to_tag  # noqa: B018
    msg.content_length  # noqa: B018
    msg.record_route  # noqa: B018
    out = Response(msg.status, msg.reason, msg.headers.copy(), msg.body)
    out.pop_via()
    return bytes(out)


RELAY_HOP = forward.Hop(Transport.UDP, "127.0.0.1", 39585)
BRANCH_URI = SipURI(user="441234567", host="127.0.0.1", port=38514)


def _is_ours(host: str, port: int) -> bool:
    return port == 39585 and host == "127.0.0.1"


def _received(data: bytes) -> Request | Response:
    """A message as the proxy gets it: parsed, checked and its common fields read."""
    msg = parse_message(data)
    if isinstance(msg, Request):
        if validate_request(msg) is not None:
            raise AssertionError("refused")
        msg.max_forwards  # noqa: B018
        msg.route  # noqa: B018
    elif validate_response(msg) is not None:
        raise AssertionError("refused")
    for read in ("top_via", "call_id", "cseq", "from_tag", "to_tag", "content_length"):
        getattr(msg, read)
    return msg


def _branch(msg: Request | Response) -> Request | Response:
    assert isinstance(msg, Request)
    return forward.prepare_branch(
        msg,
        uri=BRANCH_URI,
        via=OUR_VIA_TEXT,
        record_route=[RELAY_HOP],
        is_ours=_is_ours,
        realm="switch.example",
    )


def _trying(msg: Request | Response) -> Request | Response:
    assert isinstance(msg, Request)
    return Response.for_request(msg, 100)


def _relayed(msg: Request | Response) -> Request | Response:
    assert isinstance(msg, Response)
    return forward.relay_response(msg)


def _in_dialog(msg: Request | Response) -> Request | Response:
    assert isinstance(msg, Request)
    return forward.prepare_in_dialog(msg, via=OUR_VIA_TEXT, is_ours=_is_ours)


#: (label, index of the received message in CALL, the proxy's work on it)
RELAY_STEPS: tuple[tuple[str, int, Callable[[Request | Response], Request | Response]], ...] = (
    ("INVITE branch", 0, _branch),
    ("100 Trying", 0, _trying),
    ("180 relay", 1, _relayed),
    ("200 relay", 2, _relayed),
    ("ACK relay", 3, _in_dialog),
    ("BYE relay", 4, _in_dialog),
    ("200 BYE relay", 5, _relayed),
)


def _sent_reads(out: Request | Response) -> None:
    """What the transaction layer and the transport read of a message they send: the top
    Via (transaction key, response destination), CSeq and Call-ID."""
    out.top_via  # noqa: B018
    out.cseq  # noqa: B018
    out.call_id  # noqa: B018


def measure_relay(calls: int, repeats: int) -> list[tuple[str, float, float, float]]:
    """Best µs per call of each relay step, of serialising its output and of the reads."""
    variants = [call_variant(n) for n in range(calls)]
    best_op = [float("inf")] * len(RELAY_STEPS)
    best_bytes = [float("inf")] * len(RELAY_STEPS)
    best_reads = [float("inf")] * len(RELAY_STEPS)
    for _ in range(repeats):
        for j, (_, index, step) in enumerate(RELAY_STEPS):
            # Fresh received messages each repeat: what a step caches on its input
            # (a parsed field, a serialised part) is not found by the next repeat.
            batch = [_received(v[index]) for v in variants]
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter_ns()
                outs = [step(msg) for msg in batch]
                t1 = time.perf_counter_ns()
                for out in outs:
                    bytes(out)
                t2 = time.perf_counter_ns()
                for out in outs:
                    _sent_reads(out)
                t3 = time.perf_counter_ns()
            finally:
                gc.enable()
            best_op[j] = min(best_op[j], (t1 - t0) / calls / 1000)
            best_bytes[j] = min(best_bytes[j], (t2 - t1) / calls / 1000)
            best_reads[j] = min(best_reads[j], (t3 - t2) / calls / 1000)
    return [
        (label, op, ser, reads)
        for (label, _, _), op, ser, reads in zip(
            RELAY_STEPS, best_op, best_bytes, best_reads, strict=True
        )
    ]


def print_relay(calls: int, repeats: int) -> None:
    results = measure_relay(calls, repeats)
    print(f"Proxy per-hop work per call (best of {repeats} x {calls}), µs:")
    print(f"  {'':<14} {'step':>7} {'bytes()':>7} {'reads':>7} {'all':>7}")
    for label, op, ser, reads in results:
        print(f"  {label:<14} {op:7.2f} {ser:7.2f} {reads:7.2f} {op + ser + reads:7.2f}")
    sums = [sum(r[i] for r in results) for i in (1, 2, 3)]
    print(f"  {'per call':<14} {sums[0]:7.2f} {sums[1]:7.2f} {sums[2]:7.2f} {sum(sums):7.2f}")


def _clear_parse_caches() -> None:
    for module in (_fields, _parser, _uri):
        for name, value in vars(module).items():
            if name.startswith("_") and name.endswith("_cache") and isinstance(value, dict):
                value.clear()


def measure(calls: int, repeats: int, hot: bool) -> list[tuple[str, float]]:
    """Best µs per message over ``repeats`` runs of ``calls`` calls."""
    if hot:
        variants = [[data for _, data in CALL]] * calls
    else:
        variants = [call_variant(n) for n in range(calls)]
    handlers: list[Callable[[bytes], bytes]] = [
        on_response if data.startswith(b"SIP/") else on_request for _, data in CALL
    ]
    best = [float("inf")] * len(CALL)
    for _ in range(repeats):
        if not hot:
            _clear_parse_caches()
        gc.collect()
        gc.disable()
        try:
            # Message by message, each over every call: call n's INVITE is still read
            # before its responses, so the caches see what a run of calls shows them.
            for j, handler in enumerate(handlers):
                batch = [v[j] for v in variants]
                t0 = time.perf_counter_ns()
                for data in batch:
                    handler(data)
                elapsed = time.perf_counter_ns() - t0
                best[j] = min(best[j], elapsed / calls / 1000)
        finally:
            gc.enable()
    return [(label, us) for (label, _), us in zip(CALL, best, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--hot", action="store_true", help="repeat the same call verbatim")
    parser.add_argument("--relay", action="store_true", help="time the per-hop relay work")
    args = parser.parse_args()
    if args.relay:
        print_relay(args.calls, args.repeats)
        return
    for handler, data in zip(
        [on_response if d.startswith(b"SIP/") else on_request for _, d in CALL],
        call_variant(1),
        strict=True,
    ):
        handler(data)  # every message is accepted before anything is timed
    results = measure(args.calls, args.repeats, args.hot)
    mode = "same call repeated" if args.hot else "fresh Call-ID, tags and branches per call"
    print(f"SIP layer per received message ({mode}; best of {args.repeats} x {args.calls}):")
    for label, us in results:
        print(f"  {label:<11} {us:7.2f} µs")
    print(f"  {'per call':<11} {sum(us for _, us in results):7.2f} µs")


if __name__ == "__main__":
    main()
