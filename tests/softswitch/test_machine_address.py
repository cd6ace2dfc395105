"""What a wildcard listener answers on: this machine's addresses, not every host."""

from __future__ import annotations

import errno
import socket

import pytest

from softswitch import machine_address
from softswitch.machine_address import is_machine_address, note_own
from softswitch.transport import Flow, Transport, TransportLayer


def test_loopback_is_this_machine_and_documentation_hosts_are_not() -> None:
    assert is_machine_address("127.0.0.1")
    assert is_machine_address("127.0.0.2")  # all of 127/8 is loopback on Linux
    assert not is_machine_address("198.18.0.7")  # RFC 2544 benchmarking: no real host
    assert not is_machine_address("2001:db8::7")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "224.0.0.1", "switch.example", "", "1.2.3"])
def test_any_multicast_and_names_are_never_this_machine(host: str) -> None:
    assert not is_machine_address(host)


def test_ipv6_loopback_when_the_machine_has_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured here")
    assert is_machine_address("::1")


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's tables empty, and restored after."""
    monkeypatch.setattr(machine_address, "_own", set())
    monkeypatch.setattr(machine_address, "_mine", set())
    monkeypatch.setattr(machine_address, "_not_mine", set())
    monkeypatch.setattr(machine_address, "_window", [0.0, 0])


@pytest.mark.usefixtures("fresh")
def test_a_flood_of_new_hosts_costs_at_most_the_probes_of_a_second() -> None:
    """Hosts come from headers anyone writes: beyond ``PROBES_PER_SECOND`` bind tests a
    second an unknown host is not ours (and asked again later), and this machine's own
    addresses, found before, stay found however many others were asked about."""
    assert is_machine_address("127.0.0.1")
    probes = 0
    real_socket = socket.socket

    class Counting(socket.socket):
        def bind(self, address: object) -> None:
            nonlocal probes
            probes += 1
            super().bind(address)  # type: ignore[arg-type]

    machine_address.socket.socket = Counting  # type: ignore[misc]
    try:
        for n in range(5000):  # RFC 2544's benchmarking range
            is_machine_address(f"198.18.{n >> 8}.{n & 255}")
    finally:
        machine_address.socket.socket = real_socket  # type: ignore[misc]
    assert probes <= machine_address.PROBES_PER_SECOND
    assert is_machine_address("127.0.0.1")  # kept: no bind test needed, none allowed now


@pytest.mark.usefixtures("fresh")
def test_what_the_switch_wrote_is_its_own_whatever_the_budget() -> None:
    machine_address._window[1] = machine_address.PROBES_PER_SECOND  # spent
    machine_address._window[0] = 1e18  # in the current second, for good
    assert not is_machine_address("127.0.0.5")  # over the budget: not ours, for now
    note_own("127.0.0.5")
    assert is_machine_address("127.0.0.5")
    assert machine_address.wildcard_answers("127.0.0.5")


@pytest.mark.usefixtures("fresh")
def test_a_wildcard_listener_answers_as_any_name_and_its_addresses_only() -> None:
    assert machine_address.wildcard_answers("switch.example")
    assert machine_address.wildcard_answers("8x8.example")  # a name may start with a digit
    assert machine_address.wildcard_answers("127.0.0.1")
    assert not machine_address.wildcard_answers("198.18.0.1")


@pytest.mark.usefixtures("fresh")
def test_running_out_of_descriptors_is_no_answer_about_the_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def exhausted(*args: object, **kwargs: object) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    with monkeypatch.context() as patched:
        patched.setattr(machine_address.socket, "socket", exhausted)
        assert not is_machine_address("127.0.0.1")
    assert machine_address._mine == machine_address._not_mine == set()
    assert is_machine_address("127.0.0.1")  # asked again, not remembered as "not ours"


@pytest.mark.usefixtures("fresh")
def test_every_address_the_transport_writes_as_ours_is_noted_tcp_too() -> None:
    """A TCP flow's local address is the connection's own, never a wildcard: what
    ``sent_by`` gives for it is ours without a bind test, as a wildcard's route source is."""
    layer = TransportLayer(lambda message, flow: None)
    tcp = Flow(Transport.TCP, ("127.0.0.7", 41000), ("127.0.0.9", 5060))
    assert layer.sent_by(tcp)[0] == "127.0.0.7"
    udp = Flow(Transport.UDP, ("0.0.0.0", 5060), ("127.0.0.9", 5060))
    source = layer.sent_by(udp)[0]
    assert machine_address._own == {"127.0.0.7", source}


@pytest.mark.usefixtures("fresh")
def test_a_name_asked_about_as_an_address_stays_a_name_for_a_wildcard_listener() -> None:
    assert not is_machine_address("switch.example")
    assert machine_address.wildcard_answers("switch.example")
