"""The workers' sockets: a reuse-port group per listen address, an own port per worker, and
clear errors for ports in use."""

from __future__ import annotations

import select
import socket

import pytest

from loopback_ports import LOCAL, free_port
from softswitch.transport import Transport
from softswitch.workers.sockets import bind_worker_sockets, close_all


def _listen_udp(group: list[socket.socket]) -> dict[int, list[bytes]]:
    """What each socket of the group received (index -> datagrams)."""
    got: dict[int, list[bytes]] = {}
    while True:
        readable, _, _ = select.select(group, [], [], 0.3)
        if not readable:
            return got
        for sock in readable:
            got.setdefault(group.index(sock), []).append(sock.recv(2048))


def test_each_worker_gets_the_listen_addresses_and_an_own_port() -> None:
    port = free_port()
    groups = bind_worker_sockets([f"udp:{LOCAL}:{port}", f"tcp:{LOCAL}:{port}"], 2, None)
    try:
        for group in groups:
            shared = [(t, s.getsockname()) for t, s, own in group.sockets if not own]
            assert shared == [(Transport.UDP, (LOCAL, port)), (Transport.TCP, (LOCAL, port))]
            own = group.own_addresses()
            assert [t for t, _ in own] == [Transport.UDP, Transport.TCP]
            assert all(a[1] != port for _, a in own)
        own_ports = {a for g in groups for a in g.own_addresses()}
        assert len(own_ports) == 4  # no two workers share an own port
    finally:
        close_all(groups)


def test_datagrams_of_one_source_reach_one_socket_many_sources_both() -> None:
    port = free_port()
    groups = bind_worker_sockets([f"udp:{LOCAL}:{port}"], 2, None)
    try:
        group = [g.sockets[0][1] for g in groups]
        for sock in group:
            sock.setblocking(True)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for n in range(5):  # an INVITE and its retransmissions: one 4-tuple
                client.sendto(b"INVITE %d" % n, (LOCAL, port))
            got = _listen_udp(group)
        assert len(got) == 1
        assert len(next(iter(got.values()))) == 5
        seen: set[int] = set()
        for _ in range(32):  # new source ports until both sockets had one
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.sendto(b"x", (LOCAL, port))
            seen |= set(_listen_udp(group))
            if seen == {0, 1}:
                break
        assert seen == {0, 1}
    finally:
        close_all(groups)


def test_listen_address_in_use_is_one_clear_error() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOCAL, port))
        with pytest.raises(OSError, match=rf"cannot listen on udp:{LOCAL}:{port}: address already"):
            bind_worker_sockets([f"udp:{LOCAL}:{port}"], 2, None)


def test_a_second_switch_cannot_join_the_group() -> None:
    port = free_port()
    first = bind_worker_sockets([f"udp:{LOCAL}:{port}"], 2, None)
    try:
        with pytest.raises(OSError, match="address already in use"):
            bind_worker_sockets([f"udp:{LOCAL}:{port}"], 2, None)
    finally:
        close_all(first)


def test_worker_port_base_in_use_names_the_worker_and_the_key() -> None:
    port, base = free_port(), free_port(span=2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOCAL, base + 1))
        with pytest.raises(OSError, match="worker 1") as error:
            bind_worker_sockets([f"udp:{LOCAL}:{port}"], 2, base)
    assert str(error.value) == (
        f"cannot listen on udp:{LOCAL}:{base + 1} (worker 1's own port;"
        " [server] worker_port_base): address already in use"
    )
    # Nothing stays bound after the error: the same call succeeds once the port is free.
    groups = bind_worker_sockets([f"udp:{LOCAL}:{port}"], 2, base)
    try:
        assert [g.own_addresses() for g in groups] == [
            [(Transport.UDP, (LOCAL, base))],
            [(Transport.UDP, (LOCAL, base + 1))],
        ]
    finally:
        close_all(groups)
