"""The registrations table whatever order the workers' writers commit in: a row is replaced by
a binding registered at the same second or later only, and an unregister leaves a tombstone
that an older REGISTER committed after it does not replace; on SQLite and PostgreSQL.

Each writer here stands for another worker's: two ``BindingWriter`` on one database, one
committing after the other, as happens when two workers take REGISTERs of one contact."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from postgres_tool import either_database, postgres
from softswitch.registrar import Binding, BindingWriter, load
from softswitch.store.postgres_connect import connect, is_postgres_url

__all__ = ["either_database", "postgres"]


def binding(at: float, *, port: int = 5070) -> Binding:
    return Binding(
        account_id="pbx",
        contact="sip:pbx@192.0.2.7:5070",
        expires_at=at + 300,
        q=1.0,
        call_id="reg-1",
        cseq=int(at),
        transport="udp",
        source_ip="192.0.2.7",
        source_port=port,
        nat=False,
        registered_at=at,
    )


def committed(database: Path | str, *batches: list[Binding]) -> None:
    """Each batch put by a writer of its own, committed in the order given."""
    for batch in batches:
        writer = BindingWriter(database)
        writer.put(batch)
        assert writer.flush()
        writer.close()


def test_an_older_register_committed_later_does_not_replace_a_newer(
    database: Path | str,
) -> None:
    now = time.time()
    older, newer = binding(now - 10, port=5070), binding(now, port=6080)
    committed(database, [newer], [older])
    assert load(database, now) == [newer]
    later = binding(now + 1, port=7090)
    committed(database, [later])  # a later one still replaces it
    assert load(database, now) == [later]


def test_an_unregister_wins_over_an_older_register_committed_after_it(
    database: Path | str,
) -> None:
    now = time.time()
    put = binding(now - 10)
    first, second = BindingWriter(database), BindingWriter(database)
    try:
        first.put([put])
        assert first.flush()
        # Another worker unregisters the contact (the REGISTER with Expires: 0 at ``now``),
        # and the first worker's writer commits a refresh made before that, late.
        second.remove([put], tombstone_at=now)
        assert second.flush()
        first.put([dataclasses.replace(put, registered_at=now - 1, expires_at=now + 299)])
        assert first.flush()
        assert load(database, now) == []
        # A REGISTER after the unregister binds the contact again.
        again = binding(now + 1)
        first.put([again])
        assert first.flush()
        assert load(database, now + 2) == [again]
    finally:
        first.close()
        second.close()


def test_an_unregister_dated_before_its_binding_still_removes_it(database: Path | str) -> None:
    """The clock stepped back between a REGISTER and its unregister: the tombstone is dated
    no earlier than the binding it removes, or the table would keep the row (a row is
    replaced only by one registered at its second or later) while the 200 says it went."""
    now = time.time()
    put = binding(now)
    writer = BindingWriter(database)
    try:
        writer.put([put])
        assert writer.flush()
        writer.remove([put], tombstone_at=now - 5)
        assert writer.flush()
        assert load(database, now) == []
    finally:
        writer.close()


def test_an_unregister_of_a_binding_dated_ahead_leaves_room_for_the_next_register(
    database: Path | str,
) -> None:
    """A binding dated after the unregister (registered through a node whose clock runs 30 s
    ahead): its row is deleted rather than replaced by a tombstone (one of the unregister's
    second would not replace it; one of the binding's would refuse the phone's next
    REGISTER through this node, dated now, for 30 s), and the next REGISTER is taken."""
    now = time.time()
    ahead = binding(now + 30)
    writer = BindingWriter(database)
    try:
        writer.put([ahead])
        assert writer.flush()
        writer.remove([ahead], tombstone_at=now)
        assert writer.flush()
        assert load(database, now) == []
        again = binding(now + 1, port=5071)
        writer.put([again])
        assert writer.flush()
        assert load(database, now + 2) == [again]
    finally:
        writer.close()


def later(database: Path | str, now: float, seconds: float) -> float:
    """``now`` + ``seconds``, for ``load``. On PostgreSQL its purge goes by the database's
    clock too, which a test cannot move on: the rows are made that much older instead."""
    if is_postgres_url(database):
        with connect(str(database)) as remote:
            remote.execute(
                "UPDATE registrations SET expires_at = expires_at - %s,"
                " registered_at = registered_at - %s",
                (seconds, seconds),
            )
    return now + seconds


def test_tombstones_are_deleted_once_no_writer_can_still_hold_an_older_register(
    database: Path | str,
) -> None:
    from softswitch.registrar.store import KEEP_EXPIRED

    now = time.time()
    writer = BindingWriter(database)
    writer.remove([binding(now - 10)], tombstone_at=now)
    assert writer.flush()
    writer.close()
    assert load(database, now) == []
    assert load(database, later(database, now, KEEP_EXPIRED + 1)) == []
    # Older than the deleted tombstone (on PostgreSQL, made older itself): live again.
    tombstone_at = now - (KEEP_EXPIRED + 1 if is_postgres_url(database) else 0)
    older = dataclasses.replace(binding(tombstone_at - 5), expires_at=now + 300)
    committed(database, [older])
    assert [b.registered_at for b in load(database, now)] == [tombstone_at - 5]
