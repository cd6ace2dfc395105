"""A synthetic switch and month of CDRs, to measure ``softswitch replay`` at scale.

    python benches/cdrgen.py /tmp/replay-bench --calls 1000000 --deck-rows 50000
    softswitch replay --config /tmp/replay-bench/switch.toml \\
        --cdrs /tmp/replay-bench/cdr.sqlite --deck carrier_a=/tmp/replay-bench/carrier_a-new.csv

writes ``switch.toml`` (20 accounts on one plan, LCR over three carriers), the decks (one
A-Z prefix list from ``deckgen``, priced per carrier; the sell deck 30% over the dearest),
``carrier_a-new.csv`` (carrier A 10% dearer, a tenth of its prefixes dropped: calls move
and a few are refused) and ``cdr.sqlite``: ``--calls`` CDRs over 30 days in the switch's own
schema (``store.migrations``), 60% answered (costed with the decks, as the switch does), the
rest failed or refused. Everything comes from a seed, so every run measures the same data.

The CDRs are what the switch would have written with this configuration: each call's first
gateway is the one ``lcr`` routes it to (the configuration's own plan, through
``build_snapshot``), a number without a sell rate is refused ``no_rate``, and 5% are refused
``limit_exceeded`` (live state, which a replay counts apart). So a replay without ``--deck``
finds no changes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sqlite3
import time
from pathlib import Path

import lcr
from deckgen import numbers, prefixes
from softswitch.call.snapshot import build_snapshot
from softswitch.cdr import CSV_COLUMNS
from softswitch.config import load_config
from softswitch.store.migrations import migrate

CARRIERS = ("carrier_a", "carrier_b", "carrier_c")
HEADER = "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _money(micros: int) -> str:
    """Millionths of a unit as deck text (never through a float)."""
    return f"{micros // 10**6}.{micros % 10**6:06d}"


def write_decks(folder: Path, rows: int, seed: int) -> list[tuple[str, str]]:
    """The carriers' decks, the sell deck and carrier A's candidate; the prefix list."""
    listed = prefixes(rows, seed)
    rng = random.Random(seed + 1)
    prices: dict[str, dict[str, int]] = {c: {} for c in CARRIERS}
    for _, destination in listed:
        for carrier in CARRIERS:
            prices[carrier].setdefault(destination, rng.randrange(500, 50_000))  # 1e-6 units
    for carrier in CARRIERS:
        with (folder / f"{carrier}.csv").open("w") as out:
            out.write(HEADER)
            for prefix, destination in listed:
                out.write(f"{prefix},{destination},{_money(prices[carrier][destination])},0,1,1\n")
    with (folder / "sell.csv").open("w") as out:
        out.write(HEADER)
        for prefix, destination in listed:
            top = max(prices[c][destination] for c in CARRIERS) * 13 // 10
            out.write(f"{prefix},{destination},{_money(top)},0,60,60\n")
    with (folder / "carrier_a-new.csv").open("w") as out:
        out.write(HEADER)
        for i, (prefix, destination) in enumerate(listed):
            if i % 10 != 3:
                rate = prices["carrier_a"][destination] * 11 // 10
                out.write(f"{prefix},{destination},{_money(rate)},0,1,1\n")
    return listed


def write_config(folder: Path, accounts: int) -> None:
    lines = ['[server]\nlisten = ["udp:127.0.0.1:5060"]\ndatabase = "cdr.sqlite"\n']
    for deck in ("sell", *CARRIERS):
        lines.append(f'[[rate_decks]]\nid = "{deck}"\nfile = "{deck}.csv"\n')
    for i in range(accounts):
        lines.append(
            f'[[accounts]]\nid = "acct{i}"\nips = ["10.1.{i // 250}.{i % 250 + 1}"]\n'
            'rate_deck = "sell"\nrouting_plan = "main"\n'
        )
    for i, carrier in enumerate(CARRIERS):
        lines.append(
            f'[[gateways]]\nid = "{carrier}"\naddress = "192.0.2.{i + 1}:5060"\n'
            f'rate_deck = "{carrier}"\n'
        )
    lines.append(f'[[routes]]\nplan = "main"\nprefix = ""\ngateways = {json.dumps(CARRIERS)}\n')
    (folder / "switch.toml").write_text("\n".join(lines))


def write_cdrs(
    folder: Path, listed: list[tuple[str, str]], calls: int, accounts: int, seed: int
) -> None:
    rng = random.Random(seed + 2)
    dialed = numbers(listed, calls, seed + 3)
    snapshot = build_snapshot(load_config(folder / "switch.toml"))
    decks: dict[str, lcr.RateDeck] = dict(snapshot.decks)
    table = snapshot.table("main")
    assert table is not None
    path = folder / "cdr.sqlite"
    path.unlink(missing_ok=True)
    migrate(path)
    conn = sqlite3.connect(path)
    width = len(CSV_COLUMNS)
    insert = f"INSERT INTO cdrs ({', '.join(CSV_COLUMNS)}) VALUES ({', '.join('?' * width)})"
    span = 30 * 86_400
    moments = sorted(START + dt.timedelta(seconds=rng.randrange(span)) for _ in range(calls))
    chunk = 100_000
    for low in range(0, calls, chunk):
        part = range(low, min(calls, low + chunk))
        rows = []
        plan = []
        for i in part:
            kind = rng.random()
            billsec = rng.randrange(1, 600) if kind < 0.6 else 0
            plan.append((dialed[i], kind, billsec))
        nums = [p[0] for p in plan]
        invites = [moments[i] for i in part]
        ats = [moment + dt.timedelta(seconds=3) for moment in invites]
        durations = [p[2] for p in plan]
        rated = decks["sell"].lookup_many(nums, invites)
        # The switch's routing: the plan's first candidate, seeded with the Call-ID.
        routed = table.route_many(nums, invites, [f"call-{i}@bench" for i in part])
        sells = decks["sell"].cost_many(nums, durations, ats)
        buys = {c: decks[c].cost_many(nums, durations, ats) for c in CARRIERS}
        for k, i in enumerate(part):
            number, kind, billsec = plan[k]
            invite = moments[i]
            candidates = routed[k].candidates
            if rated[k] is None:
                refused: str | None = "no_rate"
            elif not candidates:
                refused = "no_route"
            elif kind > 0.95:
                refused = "limit_exceeded"  # live state: a replay counts these apart
            else:
                refused = None
            gateway = candidates[0].gateway if candidates and refused is None else None
            answered = (
                gateway is not None
                and kind < 0.6
                and sells[k] is not None
                and buys[gateway][k] is not None
            )
            answer = invite + dt.timedelta(seconds=3) if answered else None
            end = (answer + dt.timedelta(seconds=billsec)) if answer else invite
            attempts = (
                []
                if gateway is None
                else [{"gateway_id": gateway, "status": 200 if answered else 486}]
            )
            end_reason, status, q850 = {
                None: ("user_busy", 486, 17),
                "no_rate": ("no_rate", 404, 3),
                "no_route": ("no_route", 404, 3),
                "limit_exceeded": ("limit_exceeded", 503, 34),
            }[refused]
            caller = f"44{rng.randrange(10**9, 10**10)}"
            rows.append(
                (
                    f"call-{i}@bench",
                    f"acct{rng.randrange(accounts)}",
                    "10.1.0.1:5060",
                    caller,
                    number,
                    None if refused else number,
                    None if refused else number,
                    gateway if answered else None,
                    None if refused else routed[k].prefix,
                    invite.isoformat(timespec="microseconds"),
                    None,
                    answer.isoformat(timespec="microseconds") if answer else None,
                    end.isoformat(timespec="microseconds"),
                    float(billsec if answered else 0),
                    billsec if answered else 0,
                    None,
                    "callee" if answered else None,
                    "normal_clearing" if answered else end_reason,
                    200 if answered else status,
                    16 if answered else q850,
                    None,
                    str(sells[k]) if answered else None,
                    None,
                    str(buys[gateway][k]) if answered and gateway is not None else None,
                    json.dumps(attempts),
                    "",
                    None if refused else caller,  # caller_id: no cli rules, as sent
                )
            )
        conn.executemany(insert, rows)
        conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--deck-rows", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    listed = write_decks(args.folder, args.deck_rows, args.seed)
    write_config(args.folder, args.accounts)
    write_cdrs(args.folder, listed, args.calls, args.accounts, args.seed)
    took = time.monotonic() - began
    print(f"{args.folder}: {args.calls:,} CDRs, decks of {args.deck_rows:,} rows ({took:.1f} s)")


if __name__ == "__main__":
    main()
