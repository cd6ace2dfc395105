"""The primary's questions to the other workers about their live calls (list, hang up).

The management API runs in the primary (worker 0); a call lives in the worker that took it.
For each other worker the supervisor makes a ``SOCK_SEQPACKET`` socket pair before the fork
(the primary holds one end, the worker the other, the supervisor both, so a restarted
process on either side inherits its end). A question is one JSON packet with an id, the
answer one packet with the same id; an answer to an older question (its asker gave up on a
worker that was restarting) is dropped. A worker that does not answer within
:data:`ANSWER_TIMEOUT` seconds is left out of the list, and the API says which
(``workers_missing``).

Questions:

``{"op": "calls"}``                 every live call as the API shows one (``call_view``)
``{"op": "hang_up", "call_id": X}`` hang the calls with that Call-ID up (operator_hangup)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import select
import socket
from collections.abc import Callable, Sequence
from typing import Any, Final

__all__ = ["ANSWER_TIMEOUT", "PeerAnswerer", "Peers", "peer_channels"]

logger = logging.getLogger("softswitch.workers")

#: Seconds the primary waits for a worker's answer.
ANSWER_TIMEOUT: Final = 2.0
_BUFFER: Final = 8 * 1024 * 1024
_PACKET: Final = 16 * 1024 * 1024
#: Calls per answer packet (a call's view is about 400 bytes).
_SLICE: Final = 100

Answer = dict[str, Any]
Handler = Callable[[dict[str, Any]], Answer]


def peer_channels(workers: int) -> list[tuple[socket.socket, socket.socket]]:
    """(the primary's end, worker i's end) for workers 1 .. workers-1 (index i-1)."""
    pairs = []
    for _ in range(1, workers):
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
            sock.setblocking(False)
        pairs.append(pair)
    return pairs


class PeerAnswerer:
    """A worker's end: each question answered by ``handle`` on the event loop."""

    def __init__(self, sock: socket.socket, handle: Handler) -> None:
        self._sock = sock
        self._handle = handle
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._read)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            try:
                question = json.loads(data)
                for packet in _packets(self._handle(question), question.get("id")):
                    _send(self._sock, packet)
            except Exception:
                logger.exception("answering the primary failed")


def _packets(answer: Answer, ident: object) -> list[bytes]:
    """An answer in packets small enough for a socket buffer: a list of calls in slices of
    :data:`_SLICE`, each packet saying whether more follow."""
    calls = answer.pop("calls", None)
    if not isinstance(calls, list):
        return [json.dumps({**answer, "id": ident, "more": False}).encode()]
    slices = [calls[i : i + _SLICE] for i in range(0, len(calls), _SLICE)] or [[]]
    return [
        json.dumps({**answer, "id": ident, "calls": part, "more": n < len(slices) - 1}).encode()
        for n, part in enumerate(slices)
    ]


def _send(sock: socket.socket, packet: bytes) -> None:
    """Send one packet, waiting (1 s at most) for room while the primary reads."""
    for _ in range(2):
        try:
            sock.send(packet)
            return
        except BlockingIOError:
            select.select([], [sock], [], 1.0)
    raise TimeoutError("the primary is not reading")


class Peers:
    """The primary's end: questions to every other worker, answers gathered."""

    def __init__(self, socks: Sequence[socket.socket]) -> None:
        #: Worker index (1 ..) -> its socket.
        self._socks = {index + 1: sock for index, sock in enumerate(socks)}
        self._locks = {index: asyncio.Lock() for index in self._socks}
        self._ids = itertools.count(1)

    async def ask_all(self, question: dict[str, Any]) -> tuple[list[Answer], list[int]]:
        """Every worker's answer, and the workers that gave none in time."""
        indexes = list(self._socks)
        results = await asyncio.gather(*(self._ask(i, question) for i in indexes))
        answers = [r for r in results if r is not None]
        missing = [i for i, r in zip(indexes, results, strict=True) if r is None]
        return answers, missing

    async def _ask(self, index: int, question: dict[str, Any]) -> Answer | None:
        sock = self._socks[index]
        loop = asyncio.get_running_loop()
        async with self._locks[index]:
            ident = next(self._ids)
            _discard_stale(sock)
            try:
                sock.send(json.dumps({**question, "id": ident}).encode())
            except OSError as exc:
                logger.warning("worker %d cannot be asked: %s", index, exc)
                return None
            deadline = loop.time() + ANSWER_TIMEOUT
            answer: Answer | None = None
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    logger.warning("worker %d did not answer in %.0f s", index, ANSWER_TIMEOUT)
                    return None
                try:
                    data = await asyncio.wait_for(_receive(loop, sock), left)
                except TimeoutError:
                    continue
                packet = json.loads(data)
                if not isinstance(packet, dict) or packet.get("id") != ident:
                    continue  # an answer to an older question
                if answer is None:
                    answer = packet
                else:
                    answer["calls"] = [*answer.get("calls", []), *packet.get("calls", [])]
                if not packet.get("more"):
                    answer.pop("more", None)
                    return answer


def _discard_stale(sock: socket.socket) -> None:
    """Answers to questions whose asker gave up (a worker that was restarting)."""
    while True:
        try:
            sock.recv(_PACKET)
        except (BlockingIOError, InterruptedError):
            return


async def _receive(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    future: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        try:
            data = sock.recv(_PACKET)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if data and not future.done():
            future.set_result(data)

    loop.add_reader(sock.fileno(), readable)
    try:
        return await future
    finally:
        loop.remove_reader(sock.fileno())
