"""The transaction driver: the one loop both aiosip and the proxy engine run on.

A driver listens on loopback; a raw UDP socket plays the peer, so every byte is the test's.
The transaction user is a recorder of the driver's callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from softswitch.deadline import DeadlineTimer
from softswitch.sip import Request, Response, SipParseError, parse_message
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import ClientTransaction, ServerTransaction, Transaction
from softswitch.transaction_driver import TransactionDriver
from softswitch.transport import Flow, Malformed, Transport

LOCAL = "127.0.0.1"
FAST = TimerConfig(t1=0.01, t2=0.04, t4=0.02, timer_d=0.02)
logger = logging.getLogger("test.transaction_driver")


@dataclass
class Recorder:
    """The transaction user: what the driver handed over, in order."""

    events: list[tuple[str, object]] = field(default_factory=list)
    on_unmatched: Callable[[Request | Response, Flow, float], None] | None = None

    def unmatched(self, message: Request | Response, flow: Flow, now: float) -> None:
        self.events.append(("unmatched", message))
        if self.on_unmatched is not None:
            self.on_unmatched(message, flow, now)

    def response(self, tx: ClientTransaction, response: Response) -> None:
        self.events.append(("response", response.status))

    def request(self, tx: ServerTransaction, request: Request) -> None:
        self.events.append(("request", request.method))

    def gave_up(self, tx: Transaction, status: int, why: str) -> None:
        self.events.append(("gave_up", (status, why)))

    def terminated(self, tx: Transaction) -> None:
        self.events.append(("terminated", tx.request.method))

    def malformed(self, malformed: Malformed) -> None:
        self.events.append(("malformed", malformed.reason))
        if malformed.reason == "Bad CSeq header":
            raise RuntimeError("a bug of ours")

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def driver_for(tu: Recorder) -> TransactionDriver:
    return TransactionDriver(
        on_unmatched=tu.unmatched,
        on_response=tu.response,
        on_request=tu.request,
        on_gave_up=tu.gave_up,
        on_terminated=tu.terminated,
        on_malformed=tu.malformed,
        logger=logger,
        timers=FAST,
    )


def options(port: int, branch: str, via_port: int) -> Request:
    message = parse_message(
        (
            f"OPTIONS sip:peer@{LOCAL}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCAL}:{via_port};branch=z9hG4bK{branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:me@{LOCAL}>;tag=a1\r\n"
            f"To: <sip:peer@{LOCAL}>\r\n"
            f"Call-ID: {branch}@test\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def run(
    body: Callable[[TransactionDriver, Recorder, socket.socket, Flow], Awaitable[None]],
) -> None:
    """A driver listening on loopback UDP, a raw peer socket, and the flow between them."""

    async def main() -> None:
        tu = Recorder()
        driver = driver_for(tu)
        local = await driver.transport.listen(Transport.UDP, (LOCAL, 0))
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((LOCAL, 0))
        peer.setblocking(False)
        flow = Flow(Transport.UDP, local, peer.getsockname())
        try:
            await asyncio.wait_for(body(driver, tu, peer, flow), 10)
        finally:
            await driver.close()
            peer.close()

    asyncio.run(main())


async def receive(peer: socket.socket) -> Request | Response:
    data = await asyncio.get_running_loop().sock_recv(peer, 65535)
    return parse_message(data)


def test_a_client_transaction_sends_passes_the_answer_up_and_ends() -> None:
    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        request = options(flow.remote[1], "client1", flow.local[1])
        tx, outputs = driver.open_client(request, flow, driver.now())
        assert tu.events == []  # nothing carried out before the TU has filed tx
        driver.process(outputs)
        sent = await receive(peer)
        assert isinstance(sent, Request)
        assert sent.method == "OPTIONS"
        assert tx.peer == flow
        answer = Response.for_request(sent, 200, to_tag="b2")
        peer.sendto(bytes(answer), flow.local)
        await until(lambda: "terminated" in tu.kinds())  # Timer K, after T4
        assert tu.events == [("response", 200), ("terminated", "OPTIONS")]
        assert len(driver.transactions) == 0

    run(body)


def test_a_new_request_goes_to_the_tu_and_its_retransmission_to_its_transaction() -> None:
    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        opened: list[ServerTransaction] = []

        def open_server(message: Request | Response, at: Flow, now: float) -> None:
            assert isinstance(message, Request)
            assert at == flow
            assert now <= driver.now()
            tx, outputs = driver.open_server(message, at, now)
            opened.append(tx)
            driver.process(outputs)

        tu.on_unmatched = open_server
        request = options(flow.local[1], "server1", flow.remote[1])
        peer.sendto(bytes(request), flow.local)
        await until(lambda: len(opened) == 1)
        assert tu.kinds() == ["unmatched", "request"]
        peer.sendto(bytes(request), flow.local)  # absorbed by the transaction (17.2.2)
        await asyncio.sleep(0.05)
        assert tu.kinds() == ["unmatched", "request"]
        response = Response.for_request(request, 200, to_tag="c3")
        driver.process(driver.transactions.respond(opened[0], response, driver.now()))
        answered = await receive(peer)
        assert isinstance(answered, Response)
        assert answered.status == 200

    run(body)


def test_a_silent_peer_times_out_as_408() -> None:
    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        _, outputs = driver.open_client(
            options(flow.remote[1], "silent", flow.local[1]), flow, driver.now()
        )
        driver.process(outputs)
        await until(lambda: "gave_up" in tu.kinds())  # Timer F: 64 * T1
        assert ("gave_up", (408, "timer F fired")) in tu.events
        assert ("terminated", "OPTIONS") in tu.events

    run(body)


def test_a_send_that_fails_is_a_transport_failure_503() -> None:
    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        nowhere = Flow(Transport.UDP, (LOCAL, 9), flow.remote)  # no listener of ours there
        _, outputs = driver.open_client(
            options(flow.remote[1], "unsent", flow.local[1]), nowhere, driver.now()
        )
        driver.process(outputs)
        assert ("gave_up", (503, "not sent")) in tu.events

    run(body)


def test_a_transaction_opened_around_the_driver_without_a_flow_is_our_bug() -> None:
    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        request = options(flow.remote[1], "noflow", flow.local[1])
        _, outputs = driver.transactions.send_request(request, driver.now(), reliable=False)
        with pytest.raises(TypeError, match="no Flow"):
            driver.process(outputs)

    run(body)


def test_handler_failures_are_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)

    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        failures = iter([SipParseError("bad To header"), RuntimeError("a bug of ours")])

        def fail(message: Request | Response, at: Flow, now: float) -> None:
            raise next(failures)

        tu.on_unmatched = fail
        for branch in ("bad1", "bad2"):
            peer.sendto(bytes(options(flow.local[1], branch, flow.remote[1])), flow.local)
        await until(lambda: len(tu.events) == 2)
        records = [(r.levelno, r.getMessage()) for r in caplog.records]
        assert (logging.INFO, "call_id=bad1@test dropped malformed message: bad To header") in (
            records
        )
        assert (logging.ERROR, "call_id=bad2@test failed on a message") in records

    run(body)


def test_malformed_messages_go_to_the_tu_until_it_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The transport's refusals reach ``on_malformed``; a failure there is logged, and the
    stateless answer still goes out; after ``stop`` nothing more reaches the TU."""

    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        good = bytes(options(flow.local[1], "m", flow.remote[1]))
        peer.sendto(good.replace(b"CSeq: 1 OPTIONS", b"CSeq: one"), flow.local)
        answer = await receive(peer)
        assert isinstance(answer, Response)
        assert answer.status == 400
        peer.sendto(good.replace(b"Max-Forwards: 70", b"Max-Forwards: x"), flow.local)
        await receive(peer)
        assert tu.events == [
            ("malformed", "Bad CSeq header"),
            ("malformed", "Bad Max-Forwards header"),
        ]
        driver.stop()
        peer.sendto(good.replace(b"CSeq: 1 OPTIONS", b"CSeq: one"), flow.local)
        await receive(peer)  # still answered: the transport's job, not the TU's
        assert len(tu.events) == 2

    with caplog.at_level(logging.ERROR, logger=logger.name):
        run(body)
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.getMessage().startswith(f"handling a malformed message from ('{LOCAL}', ")
    assert failure.exc_info is not None


def test_stop_takes_no_more_messages_and_close_cancels_tasks() -> None:
    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        started = asyncio.Event()

        async def forever() -> None:
            started.set()
            await asyncio.sleep(3600)

        task = driver.spawn(forever())
        await started.wait()
        driver.stop()
        assert driver.closed
        peer.sendto(bytes(options(flow.local[1], "late", flow.remote[1])), flow.local)
        await asyncio.sleep(0.05)
        assert tu.events == []
        await driver.close()
        assert task.cancelled()

    run(body)


def test_a_failing_task_is_logged_with_its_call_id(caplog: pytest.LogCaptureFixture) -> None:
    async def body(
        driver: TransactionDriver, tu: Recorder, peer: socket.socket, flow: Flow
    ) -> None:
        async def broken() -> None:
            raise RuntimeError("boom")

        await driver.spawn(broken(), "call-9")
        (record,) = [r for r in caplog.records if r.getMessage() == "task failed"]
        assert record.call_id == "call-9"  # type: ignore[attr-defined]

    run(body)


@pytest.mark.parametrize("resolution", [0.0, 0.01])
def test_the_same_deadline_is_armed_again_after_it_fired_or_was_cancelled(
    resolution: float,
) -> None:
    fired: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timer = DeadlineTimer(fired.append, resolution=resolution)
        at = loop.time() + 0.01
        timer.schedule(at)
        await asyncio.sleep(0.05)
        assert len(fired) == 1
        timer.schedule(at)  # in the past now: fires at once
        await asyncio.sleep(0.02)
        assert len(fired) == 2
        timer.schedule(at + 0.03)
        timer.cancel()
        timer.schedule(at + 0.03)
        timer.schedule(None)
        await asyncio.sleep(0.05)
        assert len(fired) == 2  # cancelled by None
        timer.schedule(at + 0.03)
        await asyncio.sleep(0.02)
        assert len(fired) == 3
        assert fired[2] >= at + 0.03

    asyncio.run(main())
