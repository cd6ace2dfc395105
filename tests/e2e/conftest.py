"""The ``net`` fixture: one end-to-end test's world (``callflow_net.Net``), stopped after;
``second``: a second node's world beside it, for the tests of several nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from callflow_harness import sipp_binary
from callflow_net import Net


def _world(workdir: Path) -> Iterator[Net]:
    sipp_binary()
    world = Net(workdir)
    try:
        yield world
    finally:
        for sipp in world.sipps:
            sipp.stop()
        if world.switch is not None:
            world.switch.stop()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    yield from _world(tmp_path)


@pytest.fixture
def second(tmp_path: Path) -> Iterator[Net]:
    """Another node's world (its own port, config and files), stopped after."""
    workdir = tmp_path / "node2"
    workdir.mkdir()
    yield from _world(workdir)
