"""The node's own book and its repair rules (pure: no Redis)."""

from __future__ import annotations

from softswitch.cluster.holdings import Holdings


def test_a_repair_skips_keys_in_flight_and_keeps_them_unsure() -> None:
    book = Holdings()
    with book.operation("a"):
        book.add("a", 2)
    book.mark_unsure("a")
    with book.operation("a"):
        assert book.to_repair(everything=False) == {}
        assert book.unsure == {"a"}
    snapshot = book.to_repair(everything=False)
    assert {k: held for k, (held, _g) in snapshot.items()} == {"a": 2}
    book.repaired(snapshot)
    assert book.unsure == frozenset()


def test_an_operation_during_a_repair_leaves_the_key_unsure() -> None:
    book = Holdings()
    with book.operation("a"):
        book.add("a", 1)
    snapshot = book.to_repair(everything=True)
    with book.operation("a"):  # started while the repair was on the wire
        book.add("a", 1)
    book.repaired(snapshot)
    assert book.unsure == {"a"}
    book.repaired(book.to_repair(everything=False))
    assert book.unsure == frozenset()


def test_a_key_released_and_taken_again_during_a_repair_stays_unsure() -> None:
    book = Holdings()
    with book.operation("a"):
        book.add("a", 1)
    snapshot = book.to_repair(everything=True)
    book.remove("a", 1)
    with book.operation("a"):
        pass  # the release: the key is forgotten once it holds nothing
    with book.operation("a"):
        book.add("a", 1)  # taken again: a new entry, never the old operation number
    book.repaired(snapshot)
    assert book.unsure == {"a"}


def test_an_unsure_key_holding_nothing_is_repaired_to_nothing() -> None:
    book = Holdings()
    book.mark_unsure("gone")
    snapshot = book.to_repair(everything=True)
    assert {k: held for k, (held, _g) in snapshot.items()} == {"gone": 0}
    book.repaired(snapshot)
    assert book.unsure == frozenset()
    assert book.items() == {}
