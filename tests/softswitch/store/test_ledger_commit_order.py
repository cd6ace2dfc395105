"""The ledger's changes read in commit order on PostgreSQL (``billing.ledger.changes_since``).

Two transactions take ledger ids from one sequence and may commit in either order: a node's
debits and an operator's top-up, or two nodes. A reader that has counted id 11 must still
count id 10 when it commits afterwards, and must never count a row twice. Each test holds one
writer's transaction open on its own connection while the other commits, so the smaller id
commits last, every time.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from softswitch.billing import ledger
from softswitch.billing.ledger import Booking, Position
from softswitch.store.postgres_connect import Row, connect

Connection = psycopg.Connection[Row]

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def topup(account: str, amount: int, reference: str = "op") -> Booking:
    return Booking(account, "topup", amount, reference, NOW)


@pytest.fixture
def conns(pg_url: str) -> Iterator[list[Connection]]:
    """Three connections: two writers and a reader."""
    opened = [connect(pg_url) for _ in range(3)]
    yield list(opened)
    for conn in opened:
        conn.close()


def ids(conn: Connection) -> list[int]:
    return [int(r[0]) for r in conn.execute("SELECT id FROM ledger ORDER BY id")]


def test_a_row_committed_after_a_newer_one_is_counted_once(conns: list[Connection]) -> None:
    slow, fast, reader = conns
    _, position = ledger.balances(reader)
    with slow.transaction():
        ledger.append(slow, [topup("alpha", 100)], None)  # takes the smaller id
        ledger.book(fast, topup("beta", 20))  # the larger id, committed first
        changes, position = ledger.changes_since(reader, position, None)
        assert changes == [("beta", 20)]
    # alpha's row commits now, after beta's, with the smaller id
    alpha, beta = ids(reader)
    assert alpha < beta
    changes, position = ledger.changes_since(reader, position, None)
    assert changes == [("alpha", 100)]  # "id > last id seen" would have lost it
    assert ledger.changes_since(reader, position, None)[0] == []  # and nothing twice
    assert position.last_id == beta


def test_balances_and_then_changes_count_every_row_once(conns: list[Connection]) -> None:
    """The snapshot of ``balances`` taken between the two: one row in the sums, the other
    (smaller id, committed later) only in the changes."""
    slow, fast, reader = conns
    ledger.book(fast, topup("alpha", 1))
    with slow.transaction():
        ledger.append(slow, [topup("alpha", 100)], None)  # alpha stays locked till commit
        ledger.book(fast, topup("beta", 20))
        sums, position = ledger.balances(reader)
        assert sums == {"alpha": 1, "beta": 20}
    changes, position = ledger.changes_since(reader, position, None)
    assert changes == [("alpha", 100)]
    assert ledger.changes_since(reader, position, None)[0] == []
    assert ledger.balances(reader)[0] == {"alpha": 101, "beta": 20}


def test_a_runs_own_rows_are_passed_over_but_not_recounted(conns: list[Connection]) -> None:
    slow, fast, reader = conns
    _, position = ledger.balances(reader)
    with slow.transaction():
        ledger.append(slow, [Booking("alpha", "call", -5, "call-1", NOW)], "run-a")
        ledger.book(fast, topup("beta", 50))
        changes, position = ledger.changes_since(reader, position, "run-a")
        assert changes == [("beta", 50)]
    changes, position = ledger.changes_since(reader, position, "run-a")
    assert changes == []  # its own debit: the run counted it when it made it
    changes, _ = ledger.changes_since(reader, position, "run-b")
    assert changes == []  # already passed, whoever asks next


def test_an_open_transaction_holds_the_horizon_back_without_losing_rows(
    conns: list[Connection],
) -> None:
    """A transaction left open (it has written nothing yet) keeps the horizon below it:
    what commits meanwhile is counted once each read, and what it writes at last too."""
    slow, fast, reader = conns
    _, position = ledger.balances(reader)
    with slow.transaction():
        slow.execute("SELECT pg_current_xact_id()")
        counted: list[tuple[str, int]] = []
        for amount in (1, 2, 3):
            ledger.book(fast, topup("beta", amount))
            changes, position = ledger.changes_since(reader, position, None)
            counted += changes
        assert counted == [("beta", 1), ("beta", 2), ("beta", 3)]
        assert len(position.seen) == 3  # the rows above the held horizon, kept
        ledger.append(slow, [topup("alpha", 7)], None)
    changes, position = ledger.changes_since(reader, position, None)
    assert changes == [("alpha", 7)]
    assert ledger.changes_since(reader, position, None)[0] == []


def test_an_id_other_than_0_is_refused_on_postgres(conns: list[Connection]) -> None:
    _, _, reader = conns
    with pytest.raises(ValueError, match="do not commit in order"):
        ledger.changes_since(reader, 5, None)
    changes, position = ledger.changes_since(reader, 0, None)  # 0: nothing counted yet
    assert (changes, position.last_id, position.seen) == ([], 0, frozenset())
    assert position.horizon > Position().horizon


def test_two_writers_and_a_polling_reader_count_every_row_exactly_once(pg_url: str) -> None:
    """Two nodes booking to shared and own accounts at once, each transaction several rows,
    while a reader polls: what it counted is exactly the ledger's sums."""
    per_writer = 150
    errors: list[BaseException] = []
    done = threading.Event()

    def write(n: int) -> None:
        try:
            with connect(pg_url) as conn:
                for i in range(per_writer):
                    with conn.transaction():
                        ledger.append(
                            conn,
                            [topup("shared", i + 1), topup(f"own-{n}", 1), topup("shared", 1)],
                            None,
                        )
        except BaseException as e:
            errors.append(e)

    counted: Counter[str] = Counter()
    with connect(pg_url) as reader:
        _, position = ledger.balances(reader)
        writers = [threading.Thread(target=write, args=(n,)) for n in range(2)]
        for t in writers:
            t.start()

        def finished() -> None:
            for t in writers:
                t.join()
            done.set()

        joiner = threading.Thread(target=finished)
        joiner.start()
        while not done.is_set():
            changes, position = ledger.changes_since(reader, position, None)
            for account, amount in changes:
                counted[account] += amount
        joiner.join()
        changes, position = ledger.changes_since(reader, position, None)
        for account, amount in changes:
            counted[account] += amount
        sums, _ = ledger.balances(reader)
    assert errors == []
    assert dict(counted) == sums
    assert sums["shared"] == 2 * (sum(range(1, per_writer + 1)) + per_writer)
    assert sums["own-0"] == sums["own-1"] == per_writer


def test_rows_read_as_psycopg_rows(conns: list[Connection]) -> None:
    """``LedgerEntry`` reads PostgreSQL's row (``tx`` is a column more there)."""
    _, fast, _ = conns
    entry = ledger.book(fast, topup("alpha", 3, "card"))
    (row,) = fast.execute("SELECT * FROM ledger").fetchall()
    assert isinstance(row, Row)
    assert row.keys()[-1] == "tx"
    assert ledger.LedgerEntry.from_row(row) == entry
