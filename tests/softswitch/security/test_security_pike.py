"""Pike counts per source in fixed windows and blocks exactly at the rate; memory stays bounded."""

from __future__ import annotations

from softswitch.security.pike import Blocklist, Pike


def test_the_request_over_the_rate_is_the_one_that_trips() -> None:
    pike = Pike(rate=3, window=1.0)
    assert [pike.hit("192.0.2.1", 10.0 + i * 0.1) for i in range(5)] == [
        False,
        False,
        False,
        True,
        False,  # only the crossing request reports, so the caller blocks and logs once
    ]


def test_a_new_window_starts_counting_again() -> None:
    pike = Pike(rate=2, window=1.0)
    assert not pike.hit("a", 0.0)
    assert not pike.hit("a", 0.5)
    assert not pike.hit("a", 1.0)  # a new window
    assert not pike.hit("a", 1.5)
    assert pike.hit("a", 1.9)


def test_sources_are_counted_apart() -> None:
    pike = Pike(rate=1, window=1.0)
    assert not pike.hit("a", 0.0)
    assert not pike.hit("b", 0.0)
    assert pike.hit("a", 0.1)


def test_rate_zero_turns_pike_off() -> None:
    pike = Pike(rate=0, window=1.0)
    assert not any(pike.hit("a", 0.0) for _ in range(10_000))
    assert len(pike) == 0


def test_a_spoofed_flood_does_not_grow_the_table_without_bound() -> None:
    pike = Pike(rate=10, window=1.0)
    for i in range(200_000):  # 200,000 distinct sources over 20 s: 10,000 per window
        pike.hit(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", i / 10_000)
    assert len(pike) <= 4 * 10_000


def test_blocks_expire_and_are_never_shortened() -> None:
    blocks = Blocklist()
    blocks.block("a", until=10.0, now=0.0)
    blocks.block("a", until=5.0, now=1.0)
    assert blocks.is_blocked("a", 9.9)
    assert not blocks.is_blocked("a", 10.0)
    assert "a" not in blocks  # forgotten once expired


def test_a_full_list_refuses_new_blocks_but_extends_old_ones() -> None:
    blocks = Blocklist(max_blocks=2)
    assert blocks.block("a", until=10.0, now=0.0)
    assert blocks.block("b", until=10.0, now=0.0)
    assert not blocks.block("c", until=10.0, now=0.0)
    assert blocks.block("a", until=20.0, now=0.0)
    assert not blocks.is_blocked("c", 1.0)
    assert blocks.is_blocked("a", 15.0)


def test_unblock_lifts_a_block() -> None:
    blocks = Blocklist()
    blocks.block("a", until=100.0, now=0.0)
    assert blocks.unblock("a")
    assert not blocks.unblock("a")
    assert not blocks.is_blocked("a", 1.0)


def test_expired_blocks_are_swept_when_the_list_grows() -> None:
    blocks = Blocklist()
    for i in range(50_000):
        blocks.block(f"s{i}", until=i + 1.0, now=float(i))
    assert len(blocks) < 10_000
    assert blocks.blocked(49_999.5) == {"s49999": 0.5}
