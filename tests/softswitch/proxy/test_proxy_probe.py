"""OPTIONS probing marks gateways down and up, and follows reloads."""

from __future__ import annotations

import asyncio
import contextlib

from softswitch.proxy.probe import Prober, ProbeTarget
from softswitch.transport import Address, Transport


def test_down_then_up_and_reload_forgets() -> None:
    async def main() -> None:
        answers: dict[int, list[int | None]] = {5070: [None, 503, 200, 404], 5080: [200]}
        marks: list[tuple[str, bool]] = []

        async def ask(transport: Transport, address: Address, timeout: float) -> int | None:
            queue = answers[address[1]]
            return queue.pop(0) if len(queue) > 1 else queue[0]

        prober = Prober(ask, lambda gateway, up: marks.append((gateway, up)))
        a = ProbeTarget("a", Transport.UDP, ("127.0.0.1", 5070), 0.01)
        b = ProbeTarget("b", Transport.UDP, ("127.0.0.1", 5080), 0.01)
        prober.start([a, b, ProbeTarget("off", Transport.UDP, ("127.0.0.1", 1), 0)])
        await asyncio.sleep(0.1)
        # a: no answer (down), 503 (still down: no new mark), 200 (up), 404 (still up)
        assert [m for m in marks if m[0] == "a"] == [("a", False), ("a", True)]
        assert [m for m in marks if m[0] == "b"] == [("b", True)]
        assert not [m for m in marks if m[0] == "off"]
        marks.clear()
        prober.start([b])  # a reload without gateway a: it is no longer probed, so up
        await asyncio.sleep(0.05)
        assert ("a", True) in marks
        await prober.stop()

    asyncio.run(asyncio.wait_for(main(), 5))


def test_a_probe_that_lost_the_reloads_cancel_stops_and_marks_nothing() -> None:
    """The old probe's ``ask`` drops the reload's cancel and answers 503 (its old address is
    gone), as Python 3.11's ``wait_for`` can: the probe ends without marking the gateway, and
    only the new probe, to the new address, marks it."""

    async def main() -> None:
        marks: list[tuple[str, int]] = []
        asking_old = asyncio.Event()

        async def ask(transport: Transport, address: Address, timeout: float) -> int | None:
            if address[1] == 5070:
                if not asking_old.is_set():  # once: a failing test must still end
                    asking_old.set()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.sleep(3600)
                return 503
            return 200

        old = ProbeTarget("a", Transport.UDP, ("127.0.0.1", 5070), 0.01)
        new = ProbeTarget("a", Transport.UDP, ("127.0.0.1", 5080), 0.01)
        prober = Prober(ask, lambda gateway, up: marks.append((gateway, int(up))))
        prober.start([old])
        await asking_old.wait()
        prober.start([new])  # the reload: gateway a moved
        await asyncio.sleep(0.1)
        await prober.stop()
        assert marks == [("a", 1)]

    asyncio.run(asyncio.wait_for(main(), 5))
