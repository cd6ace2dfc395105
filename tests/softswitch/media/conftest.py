"""Fixtures for the media tests: one real rtpengine for the session (see ``rtpengine_tool``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rtpengine_tool import Rtpengine, running_rtpengine


@pytest.fixture(scope="session")
def rtpengine() -> Iterator[Rtpengine]:
    """A userspace-only rtpengine on 127.0.0.1, shared by the session; tests delete the calls
    they create, so its 200 RTP ports last."""
    with running_rtpengine() as engine:
        yield engine
        assert engine.process.poll() is None, f"rtpengine died:\n{engine.log()[-3000:]}"
