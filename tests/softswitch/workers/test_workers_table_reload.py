"""Reloads that swap ids in the workers' shared table of accounts and gateways."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from softswitch.config import Config, demo_config
from softswitch.workers.live import SharedLiveState, SharedState


def test_a_reload_the_table_accepted_can_admit_every_account_it_has(tmp_path: Path) -> None:
    """``SharedState.refusal`` accepts a configuration by its live ids. Slots a reload frees
    leave tombstones, and a table whose live entries and tombstones filled it refused the
    new ids of an accepted configuration ("the shared table ... is full", every call of
    those accounts an internal error until a restart): a reload that renamed 60 of 740 ids
    in a table of 1024 slots left 21 of the 60 with no slot."""
    base = demo_config(tmp_path / "state")
    shared = SharedState.for_config(base, workers=2)
    live = SharedLiveState(shared, 0)
    table = shared.counters
    first = base.accounts[0]

    def with_accounts(ids: list[str]) -> Config:
        accounts = tuple(
            dataclasses.replace(first, id=i, tech_prefix=f"9{k:05d}") for k, i in enumerate(ids)
        )
        return dataclasses.replace(base, accounts=accounts)

    before = [f"a{k}" for k in range(740 - len(base.gateways))]
    config = with_accounts(before)
    assert shared.refusal(config) is None
    shared.forget_absent(config)
    for account in before:
        assert live.account_admit(account, 1.0, max_calls=10) is None
        live.account_release(account)
    for gateway in base.gateways:
        live.mark_gateway(gateway.id, True)
    assert table.entries + len(base.accounts) >= 740

    after = before[60:] + [f"b{k}" for k in range(60)]
    config = with_accounts(after)
    assert shared.refusal(config) is None  # the same number of ids
    shared.forget_absent(config)
    assert table.tombstones == 0
    for account in after[-60:]:
        assert live.account_admit(account, 2.0, max_calls=10) is None, account
        live.account_release(account)
    assert shared.refusal(config) is None
