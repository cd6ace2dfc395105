"""The workers' shared tables sized from the configuration: every ``max_cps`` and the
``auth_fail_limit`` counted exactly, a reload that outgrows them refused with the key named,
and the slots of ids a reload removed freed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from softswitch.call.live import LiveState
from softswitch.config import Config, demo_config
from softswitch.workers.live import CPS_RING, SharedLiveState, SharedState


def with_limits(tmp_path: Path, *, cps: int | None = None, auth: int | None = None) -> Config:
    config = demo_config(tmp_path / "state")
    if cps is not None:
        account = dataclasses.replace(config.accounts[0], max_cps=cps)
        config = dataclasses.replace(config, accounts=(account, *config.accounts[1:]))
    if auth is not None:
        defaults = dataclasses.replace(config.defaults, auth_fail_limit=auth)
        config = dataclasses.replace(config, defaults=defaults)
    return config


def test_max_cps_above_the_default_ring_is_enforced(tmp_path: Path) -> None:
    config = with_limits(tmp_path, cps=2000)
    live = SharedLiveState(SharedState.for_config(config, workers=2), 0)
    one = LiveState()
    times = [100.0 + i * 1e-5 for i in range(5000)]  # 5000 attempts within 0.05 s
    shared = sum(live.account_admit("acme", t, max_cps=2000) is None for t in times)
    alone = sum(one.account_admit("acme", t, max_cps=2000) is None for t in times)
    assert shared == alone == 2000


def test_auth_fail_limit_above_the_default_ring_blocks(tmp_path: Path) -> None:
    config = with_limits(tmp_path, auth=100)
    live = SharedLiveState(SharedState.for_config(config, workers=2), 0)
    blocked = [live.note_auth_failure("203.0.113.9", 1.0 + k / 1000, limit=100) for k in range(100)]
    assert blocked == [False] * 99 + [True]


def test_a_reload_past_the_rings_is_refused_naming_the_key(tmp_path: Path) -> None:
    shared = SharedState.for_config(with_limits(tmp_path), workers=2)
    assert shared.refusal(with_limits(tmp_path)) is None
    refused = shared.refusal(with_limits(tmp_path, cps=10 * CPS_RING))
    assert refused is not None
    assert "max_cps" in refused
    assert "restart" in refused
    refused = shared.refusal(with_limits(tmp_path, auth=10_000))
    assert refused is not None
    assert "defaults.auth_fail_limit" in refused


def test_a_reload_frees_removed_ids_and_refuses_what_cannot_fit(tmp_path: Path) -> None:
    config = demo_config(tmp_path / "state")
    shared = SharedState.for_config(config, workers=2)
    live = SharedLiveState(shared, 0)
    capacity = shared.counters.capacity
    for n in range(capacity):  # ids of earlier configurations, one still in a call
        assert live.account_admit(f"old{n}", 1.0, max_calls=10) is None
        if n:
            live.account_release(f"old{n}")
    assert shared.counters.entries == capacity
    # Full, but the reload frees what it removed: the configuration's own ids fit then.
    assert shared.refusal(config) is None
    assert shared.forget_absent(config) == capacity - 1  # the one in a call stays
    assert live.account_admit(config.accounts[0].id, 2.0, max_calls=10) is None
    first = config.accounts[0]
    many = [
        dataclasses.replace(first, id=f"n{n}", tech_prefix=f"9{n:04d}") for n in range(capacity)
    ]
    refused = shared.refusal(dataclasses.replace(config, accounts=tuple(many)))
    assert refused is not None
    assert "accounts and gateways" in refused


def test_a_max_cps_past_the_ring_is_held_at_the_ring_never_looser() -> None:
    live = SharedLiveState(SharedState(workers=2, ids=1, cps_ring=8), 0)
    times = [100.0 + i * 1e-3 for i in range(50)]
    assert sum(live.account_admit("acme", t, max_cps=20) is None for t in times) == 8
