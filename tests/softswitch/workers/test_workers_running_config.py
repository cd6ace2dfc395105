"""The configuration the workers run, recorded for a restarted worker."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from softswitch.config import demo_config
from softswitch.workers import running_config
from softswitch.workers.running_config import RunningConfig
from softswitch.workers.table import ProcessLock


def test_a_record_reads_back_and_a_half_written_one_reads_as_read_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker killed while it writes a record (the lock is taken over, the record stays as
    it was left) must not leave a pickle cut short: every later restart would fail on it."""
    record = RunningConfig(ProcessLock())
    assert record.read() is None  # nothing recorded: the start's configuration
    small = demo_config(tmp_path / "state")
    record.record(small)
    assert record.read() == small
    # A longer configuration written half-way over the shorter one, as a kill leaves it.
    first = small.accounts[0]
    longer = dataclasses.replace(
        small,
        accounts=tuple(
            dataclasses.replace(first, id=f"a{k}", tech_prefix=f"9{k:03d}") for k in range(200)
        ),
    )
    memory = record._memory
    header = running_config._HEADER
    data = running_config.pickle.dumps(longer, running_config.pickle.HIGHEST_PROTOCOL)
    with caplog.at_level(logging.ERROR, logger="softswitch.workers"):
        header.pack_into(memory, 0, running_config._WRITING, 0)
        memory[header.size : header.size + len(data) // 2] = data[: len(data) // 2]
        assert record.read() is False  # read the file
        # The bytes changed under an old header (the way the code wrote before the mark).
        length = len(running_config.pickle.dumps(small, running_config.pickle.HIGHEST_PROTOCOL))
        old = running_config.pickle.dumps(small, running_config.pickle.HIGHEST_PROTOCOL)
        header.pack_into(memory, 0, length, running_config.zlib.crc32(old))
        assert record.read() is False
    assert len([r for r in caplog.records if "not recorded whole" in r.getMessage()]) == 2
    record.record(longer)
    assert record.read() == longer
