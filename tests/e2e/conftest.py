"""The ``net`` fixture: one end-to-end test's world (``callflow_net.Net``), stopped after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from callflow_harness import sipp_binary
from callflow_net import Net


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    sipp_binary()
    world = Net(tmp_path)
    try:
        yield world
    finally:
        for sipp in world.sipps:
            sipp.stop()
        if world.switch is not None:
            world.switch.stop()
