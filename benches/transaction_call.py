"""CPU of one call's transactions: the sans-I/O layer alone, then the driver with its transport.

    python benches/transaction_call.py [--calls 2000] [--repeats 7]

One call as the switch sees it (captured from a SIPp run through the switch): the caller's
INVITE opens a server INVITE transaction (the layer sends 100 Trying), the switch's INVITE
to the carrier a client INVITE transaction that receives 180 and 200, relayed to the caller
as 180 and 200 on the server transaction; the caller's ACK matches nothing (the 2xx ended
both INVITE transactions) and is forwarded statelessly; the caller's BYE opens a server
non-INVITE transaction, its relay a client one, and the carrier's 200 is relayed back.

``layer``: :class:`TransactionLayer` only. Messages are parsed and validated outside the
timed region (the transport's work; the proxy's for the outbound ones, whose top Via and
CSeq it reads), so the figure is the layer's own work. The clock moves ``--step`` seconds
per call, so Timers J and K come due and fire among the calls, and the layer is asked for
its next deadline after each input as the driver does.

``driver``: :class:`TransactionDriver` with its :class:`TransportLayer`, whose UDP socket is
a fake that only counts ``sendto``: received datagrams go in as bytes through
``_on_datagram`` (parse and validate included), the outbound messages (what the proxy would
build) are parsed outside the timed region, and every send is serialised. The TU is a few
lines that relay as the proxy does.

Each figure is the best of ``--repeats`` runs of ``--calls`` calls, in microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softswitch.proxy.engine import TIMER_RESOLUTION
from softswitch.sip import Request, Response, parse_message, validate_request, validate_response
from softswitch.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    TransactionLayer,
    Unmatched,
)
from softswitch.transaction_driver import TransactionDriver
from softswitch.transport import Flow, Transport, _DatagramEndpoint

# The captured call, from tests/ (after the imports above: its softswitch/ folder of tests
# would shadow the installed package).
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from captured_call import (
    ACK_IN,
    ACK_OUT,
    BYE_IN,
    BYE_OK_IN,
    BYE_OK_OUT,
    BYE_OUT,
    INVITE_IN,
    INVITE_OUT,
    OK_IN,
    OK_OUT,
    RINGING_IN,
    RINGING_OUT,
)

# ---------------------------------------------------------------------------- one call

#: The caller's branches end in -48-N, the Call-ID starts with 48-, and the switch's own
#: branches are these three: each call gets its own copies.
_OUR_BRANCHES = (b"z9hG4bK66b90893025a01ac", b"z9hG4bK2a99950073eea033", b"z9hG4bK20a570b4f37373a3")

SWITCH = ("127.0.0.1", 39585)
CALLER = ("127.0.0.1", 58614)
CARRIER = ("127.0.0.1", 38514)


def variant(template: bytes, i: int) -> bytes:
    data = template.replace(b"-48-", b"-%d-" % i).replace(b"48-32551@", b"%d-32551@" % i)
    for n, branch in enumerate(_OUR_BRANCHES):
        data = data.replace(branch, b"z9hG4bK%d%015x" % (n, i))
    return data


@dataclass
class Call:
    invite_in: bytes
    ringing_in: bytes
    ok_in: bytes
    ack_in: bytes
    bye_in: bytes
    bye_ok_in: bytes
    invite_out: Request
    ringing_out: Response
    ok_out: Response
    ack_out: Request
    bye_out: Request
    bye_ok_out: Response


def _request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    _ = message.top_via, message.cseq  # read while the proxy built it (forward.py)
    return message


def _response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    _ = message.top_via, message.cseq
    return message


def received(data: bytes) -> Request | Response:
    """As the transport hands it up: parsed and validated (which reads Via and CSeq)."""
    message = parse_message(data)
    if isinstance(message, Request):
        assert validate_request(message) is None
    else:
        assert validate_response(message) is None
    return message


def make_calls(n: int) -> list[Call]:
    return [
        Call(
            variant(INVITE_IN, i),
            variant(RINGING_IN, i),
            variant(OK_IN, i),
            variant(ACK_IN, i),
            variant(BYE_IN, i),
            variant(BYE_OK_IN, i),
            _request(variant(INVITE_OUT, i)),
            _response(variant(RINGING_OUT, i)),
            _response(variant(OK_OUT, i)),
            _request(variant(ACK_OUT, i)),
            _request(variant(BYE_OUT, i)),
            _response(variant(BYE_OK_OUT, i)),
        )
        for i in range(n)
    ]


# --------------------------------------------------------------------------- the layer

#: With ``--profile``: the timed regions run under it (and the figures mean little).
PROFILER: cProfile.Profile | None = None


def _timed_start() -> int:
    if PROFILER is not None:
        PROFILER.enable()
    return time.perf_counter_ns()


def _timed_end(start: int) -> int:
    elapsed = time.perf_counter_ns() - start
    if PROFILER is not None:
        PROFILER.disable()
    return elapsed


def run_layer(calls: list[Call], step: float) -> tuple[int, int]:
    """(ns for all calls, transactions still in the layer)."""
    layer = TransactionLayer()
    inputs = [
        (
            received(c.invite_in),
            received(c.ringing_in),
            received(c.ok_in),
            received(c.ack_in),
            received(c.bye_in),
            received(c.bye_ok_in),
            c,
        )
        for c in calls
    ]
    receive, create_server, send_request = layer.receive, layer.create_server, layer.send_request
    respond, next_deadline, handle_timers = layer.respond, layer.next_deadline, layer.handle_timers
    now = 1000.0
    gc.collect()
    start = _timed_start()
    for invite, ringing, ok, ack, bye, bye_ok, c in inputs:
        now += step
        deadline = next_deadline()
        if deadline is not None and deadline <= now:
            handle_timers(now)
            next_deadline()
        assert isinstance(receive(invite, now), Unmatched)
        stx, _ = create_server(invite, now, reliable=False, peer=CALLER)  # type: ignore[arg-type]
        next_deadline()
        send_request(c.invite_out, now, reliable=False, peer=CARRIER)
        next_deadline()
        receive(ringing, now)
        next_deadline()
        respond(stx, c.ringing_out, now)
        next_deadline()
        receive(ok, now)
        next_deadline()
        respond(stx, c.ok_out, now)
        next_deadline()
        assert isinstance(receive(ack, now), Unmatched)  # the ACK for the 2xx
        assert isinstance(receive(bye, now), Unmatched)
        btx, _ = create_server(bye, now, reliable=False, peer=CALLER)  # type: ignore[arg-type]
        next_deadline()
        send_request(c.bye_out, now, reliable=False, peer=CARRIER)
        next_deadline()
        receive(bye_ok, now)
        next_deadline()
        respond(btx, c.bye_ok_out, now)
        next_deadline()
    elapsed = _timed_end(start)
    return elapsed, len(layer)


# -------------------------------------------------------------------------- the driver


class _FakeSocket:
    """The part of a datagram transport an endpoint sends through."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent += 1

    def is_closing(self) -> bool:
        return False


class _Relay:
    """The TU: relays one call as the proxy does, from prepared outbound messages."""

    def __init__(self, calls: list[Call]) -> None:
        self.by_call_id = {c.invite_out.call_id: c for c in calls}
        self.driver: TransactionDriver | None = None
        self.servers: dict[Transaction, ServerTransaction] = {}
        self.carrier = Flow(Transport.UDP, SWITCH, CARRIER)

    def unmatched(self, message: Request | Response, flow: Flow, now: float) -> None:
        driver = self.driver
        assert driver is not None
        assert isinstance(message, Request)
        c = self.by_call_id[message.call_id]
        if message.method == "ACK":
            driver.transport.send(self.carrier, c.ack_out)
            return
        stx, outputs = driver.open_server(message, flow, now)
        driver.process(outputs)
        out = c.invite_out if message.method == "INVITE" else c.bye_out
        ctx, outputs = driver.open_client(out, self.carrier, now)
        self.servers[ctx] = stx
        driver.process(outputs)

    def response(self, tx: ClientTransaction, response: Response) -> None:
        driver = self.driver
        assert driver is not None
        if response.status == 100:
            return
        stx = self.servers[tx]
        c = self.by_call_id[response.call_id]
        if tx.kind.value == "client INVITE":
            relayed = c.ringing_out if response.status == 180 else c.ok_out
        else:
            relayed = c.bye_ok_out
        driver.process(driver.transactions.respond(stx, relayed, driver.now()))

    def gave_up(self, tx: Transaction, status: int, why: str) -> None:
        raise AssertionError(f"{tx!r} gave up: {status} {why}")

    def terminated(self, tx: Transaction) -> None:
        self.servers.pop(tx, None)


async def _run_driver(calls: list[Call], step: float) -> tuple[int, int]:
    tu = _Relay(calls)
    driver = TransactionDriver(
        on_unmatched=tu.unmatched,
        on_response=tu.response,
        on_gave_up=tu.gave_up,
        on_terminated=tu.terminated,
        logger=logging.getLogger("bench"),
        resolution=TIMER_RESOLUTION,
    )
    tu.driver = driver
    transport = driver.transport
    endpoint = _DatagramEndpoint(transport)
    fake = _FakeSocket()
    endpoint.transport = fake  # type: ignore[assignment]
    endpoint.local = SWITCH
    transport._udp[SWITCH] = endpoint
    clock = [asyncio.get_running_loop().time()]
    driver._clock = lambda: clock[0]
    on_datagram = transport._on_datagram
    next_deadline = driver.transactions.next_deadline
    on_timer = driver._on_timer
    gc.collect()
    start = _timed_start()
    for c in calls:
        clock[0] += step
        deadline = next_deadline()
        if deadline is not None and deadline <= clock[0]:
            on_timer(deadline)  # what the loop's timer would do
        on_datagram(endpoint, c.invite_in, CALLER)
        on_datagram(endpoint, c.ringing_in, CARRIER)
        on_datagram(endpoint, c.ok_in, CARRIER)
        on_datagram(endpoint, c.ack_in, CALLER)
        on_datagram(endpoint, c.bye_in, CALLER)
        on_datagram(endpoint, c.bye_ok_in, CARRIER)
    elapsed = _timed_end(start)
    assert fake.sent == 7 * len(calls), fake.sent
    driver.stop()
    return elapsed, len(driver.transactions)


def run_driver(calls: list[Call], step: float) -> tuple[int, int]:
    return asyncio.run(_run_driver(calls, step))


# ------------------------------------------------------------------------------- main


def best(run: Callable[[list[Call], float], tuple[int, int]], args: argparse.Namespace) -> float:
    times: list[float] = []
    n: int = args.calls
    for _ in range(args.repeats):
        elapsed, _ = run(make_calls(n), args.step)
        times.append(elapsed / n / 1000)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--step", type=float, default=0.04, help="clock step per call (s)")
    parser.add_argument("--only", choices=("layer", "driver"))
    parser.add_argument("--profile", action="store_true", help="cProfile the timed regions")
    args = parser.parse_args()
    global PROFILER
    if args.profile:
        PROFILER = cProfile.Profile()
    if args.only != "driver":
        print(f"layer:  {best(run_layer, args):7.1f} us per call")
    if args.only != "layer":
        print(f"driver: {best(run_driver, args):7.1f} us per call")
    if PROFILER is not None:
        pstats.Stats(PROFILER).sort_stats("tottime").print_stats(35)


if __name__ == "__main__":
    main()
