"""The one loop timer behind a sans-I/O core's deadlines."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.deadline import DeadlineTimer, round_up


def test_exact_deadlines_fire_with_the_deadline() -> None:
    fired: list[float] = []

    async def main() -> None:
        timer = DeadlineTimer(fired.append)
        at = asyncio.get_running_loop().time() + 0.02
        timer.schedule(at)
        await asyncio.sleep(0.05)
        assert fired == [at]

    asyncio.run(main())


def test_deadlines_in_one_tick_share_a_wake_up() -> None:
    fired: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timer = DeadlineTimer(fired.append, resolution=0.05)
        base = (loop.time() // 0.05 + 1) * 0.05
        timer.schedule(base + 0.001)
        armed = timer._handle
        for offset in (0.01, 0.02, 0.049):
            timer.schedule(base + offset)
            assert timer._handle is armed  # not re-armed
        await asyncio.sleep(base + 0.15 - loop.time())
        assert len(fired) == 1
        assert base + 0.049 <= fired[0] <= base + 0.051

    asyncio.run(main())


@given(
    deadline=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    resolution=st.sampled_from([0.001, 0.01, 0.1, 0.3, 1.0]),
)
def test_rounding_never_fires_before_the_deadline(deadline: float, resolution: float) -> None:
    rounded = round_up(deadline, resolution)
    assert deadline <= rounded <= deadline + 2 * resolution


def test_negative_resolution_is_refused() -> None:
    with pytest.raises(ValueError, match="resolution"):
        DeadlineTimer(lambda _: None, resolution=-1)
