"""The grace a switch gives its credit holds in Redis, as it starts and as it reloads."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from redis.asyncio import Redis

from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config
from softswitch.proxy.server import Switch


def switch_with(tmp_path: Path, url: str, sync_interval: float) -> tuple[Path, Switch]:
    path = tmp_path / "switch.toml"
    path.write_text(
        f'[server]\ndatabase = "{tmp_path / "cdr.sqlite"}"\nshared_state = "{url}"\n'
        f'node_id = "grace-{uuid.uuid4().hex[:8]}"\n'
        f'[billing]\nsync_interval = {sync_interval}\n[management]\nlisten = "off"\n'
    )
    config = load_config(path)
    return path, Switch(config, build_snapshot(config), path)


def test_a_reload_of_sync_interval_lengthens_the_grace_up_to_an_hour(
    tmp_path: Path, url: str
) -> None:
    """(3 + 1) heartbeats of 5 s, ``sync_interval``, a lease of 10 s: 31 s at 1 s. Raised by
    a reload, the nodes read a dead node's debits later, so its holds must count longer from
    the next renewal on (they stayed at 31 s: the gap the grace closes, open again); at an
    hour of ``sync_interval`` the grace is capped at an hour (the grace beyond it stopped the
    switch from starting)."""
    path, switch = switch_with(tmp_path, url, 1.0)
    seen: dict[str, float] = {}

    async def main() -> None:
        # What is seen is asserted once the switch has stopped.
        try:
            await switch.start(["udp:127.0.0.1:0"])
            shared = switch.shared
            assert shared is not None
            assert shared.state is not None
            lease = shared.state._lease
            seen["at start"] = lease.grace
            path.write_text(path.read_text().replace("sync_interval = 1.0", "sync_interval = 3600"))
            seen["reloaded"] = float(await switch.reload())
            seen["after the reload"] = lease.grace
            await lease.renew()
            client = Redis.from_url(url)
            try:
                seen["seen key's ms"] = await client.pttl(lease.seen_key)
            finally:
                await client.aclose()
        finally:
            await asyncio.wait_for(switch.stop(0), 30)

    asyncio.run(main())
    assert seen["at start"] == 31.0
    assert seen["reloaded"] == 1.0
    assert seen["after the reload"] == 3600.0
    assert 31_000 < seen["seen key's ms"] <= 3_600_000
