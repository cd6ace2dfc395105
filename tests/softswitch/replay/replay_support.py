"""A small switch configuration and five hand-made CDRs whose figures the tests know exactly.

Decks (all per minute, prices at 2026-11-02):

* ``sell``: 44 United Kingdom 0.020 and 49 Germany 0.030, billed per whole minute (60/60);
* ``a``: 44 0.010 (60/60), 49 0.015 (60/60);
* ``b``: 44 0.014 and 49 0.014, per second (1/1).

Plan ``main`` routes everything by LCR over a and b: the UK to a first, Germany to b.

The CDRs, as the switch recorded them:

====  ============  =========  ===========================  =======  =======
call  number        gateway    outcome                      sell     buy
====  ============  =========  ===========================  =======  =======
c1    442071234567  a          answered, 120 s              0.040    0.020
c2    442071234568  a          answered, 30 s               0.020    0.010
c3    4930123456    b          answered, 90 s               0.060    0.021
c4    442071234569  a          failed 486 (not answered)
c5    33123456      (none)     refused no_rate
====  ============  =========  ===========================  =======  =======
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from softswitch.cdr import CdrAttempt, CdrRecord, CdrStore

CONFIG = """
[server]
listen = ["udp:127.0.0.1:5060"]
database = "cdr.sqlite"

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "a"
file = "a.csv"

[[rate_decks]]
id = "b"
file = "b.csv"

[[accounts]]
id = "cust"
ips = ["10.0.0.1"]
rate_deck = "sell"
routing_plan = "main"

[[gateways]]
id = "a"
address = "192.0.2.1:5060"
rate_deck = "a"

[[gateways]]
id = "b"
address = "192.0.2.2:5060"
rate_deck = "b"

[[routes]]
plan = "main"
prefix = ""
gateways = ["a", "b"]
"""

HEADER = "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
SELL = HEADER + "44,United Kingdom,0.020,0,60,60\n49,Germany,0.030,0,60,60\n"
A = HEADER + "44,United Kingdom,0.010,0,60,60\n49,Germany,0.015,0,60,60\n"
B = HEADER + "44,United Kingdom,0.014,0,1,1\n49,Germany,0.014,0,1,1\n"

DAY = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def write_config(folder: Path) -> Path:
    for name, text in (("sell.csv", SELL), ("a.csv", A), ("b.csv", B)):
        (folder / name).write_text(text)
    path = folder / "switch.toml"
    path.write_text(CONFIG)
    return path


def _answered(
    call_id: str, number: str, gateway: str, minute: int, billsec: int, sell: str, buy: str
) -> CdrRecord:
    invite = DAY + dt.timedelta(minutes=minute)
    answer = invite + dt.timedelta(seconds=2)
    return CdrRecord(
        call_id=call_id,
        account_id="cust",
        source="10.0.0.1:5060",
        caller="441234567890",
        callee_dialed=number,
        callee_normalised=number,
        gateway_id=gateway,
        route_prefix="",
        invite_at=invite,
        answer_at=answer,
        end_at=answer + dt.timedelta(seconds=billsec),
        end_reason="normal_clearing",
        status=200,
        q850=16,
        attempts=(CdrAttempt(gateway, 200, "answered", invite),),
        sell_cost=Decimal(sell),
        buy_cost=Decimal(buy),
    )


def records() -> list[CdrRecord]:
    failed_at = DAY + dt.timedelta(minutes=4)
    refused_at = DAY + dt.timedelta(minutes=5)
    return [
        _answered("c1", "442071234567", "a", 1, 120, "0.040000", "0.020000"),
        _answered("c2", "442071234568", "a", 2, 30, "0.020000", "0.010000"),
        _answered("c3", "4930123456", "b", 3, 90, "0.060000", "0.021000"),
        CdrRecord(
            call_id="c4",
            account_id="cust",
            source="10.0.0.1:5060",
            caller="441234567890",
            callee_dialed="442071234569",
            callee_normalised="442071234569",
            route_prefix="",
            invite_at=failed_at,
            end_at=failed_at + dt.timedelta(seconds=5),
            end_reason="user_busy",
            status=486,
            q850=17,
            attempts=(CdrAttempt("a", 486, "failed", failed_at),),
        ),
        CdrRecord(
            call_id="c5",
            account_id="cust",
            source="10.0.0.1:5060",
            caller="441234567890",
            callee_dialed="33123456",
            invite_at=refused_at,
            end_at=refused_at,
            end_reason="no_rate",
            status=404,
            q850=1,
            detail="deck 'sell' has no rate for 33123456",
        ),
    ]


def write_cdrs(path: Path) -> Path:
    with CdrStore(path) as store:
        for record in records():
            store.write(record)
    return path
