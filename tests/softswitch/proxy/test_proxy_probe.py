"""OPTIONS probing marks gateways down and up, and follows reloads."""

from __future__ import annotations

import asyncio

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
