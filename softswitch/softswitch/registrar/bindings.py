"""Registered contacts (RFC 3261 10): what one REGISTER leaves behind, and the live index.

A :class:`Binding` is one contact of one account with its expiry, the Call-ID and CSeq of
the REGISTER that set it (a reordered REGISTER must not undo a newer one, 10.3 step 7) and
the address the REGISTER came from. That address is how the contact is reached when it sits
behind a NAT (RFC 3581): the Contact then names an address the switch cannot reach, while
the source address and port are the NAT's mapping, which the client keeps open by
re-registering (:attr:`Binding.destination`). A REGISTER that came through proxies which
asked to stay on the way to the contact (``Path``, RFC 3327: a SIP balancer in front of
several nodes, an edge proxy at the customer's NAT) leaves their Path with the binding: calls
to the contact then go to its first hop with the Path as their Route set, and the proxies
take them on from there (:attr:`Binding.route`).

:class:`Registrations` is the in-memory index the call path reads: an account's live
contacts in the order they are tried (q-value, then the most recently registered), and the
account whose contact registered from a source address (authorise). Times are wall-clock
seconds, so that a binding's expiry means the same after a restart. No I/O here: the store
(``registrar.store``) makes it durable.

Every binding carries the fingerprint of the credentials its REGISTER passed
(``registrar.credentials``); once told the configuration's (:meth:`Registrations.accept`),
the index answers every question with the bindings that match it only, so a binding made
under credentials a reload changed (here or in another worker) is never used.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

from softswitch.sip import SipParseError, SipURI, parse_name_addr, parse_uri
from softswitch.sip.headers import split_commas
from softswitch.transport import Address, Transport

__all__ = ["Binding", "Registrations", "host_ip", "reached_behind_nat"]


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of one account."""

    account_id: str
    #: The Contact URI as registered (its text, without the header parameters).
    contact: str
    #: Wall-clock second at which it expires.
    expires_at: float
    #: The contact's ``q`` (0 to 1); 1 when the REGISTER gave none.
    q: float
    call_id: str
    cseq: int
    #: ``udp`` or ``tcp``: what the REGISTER came over, and what calls to it use.
    transport: str
    source_ip: str
    source_port: int
    #: Calls go to the source address and port rather than the Contact's (RFC 3581).
    nat: bool
    #: Wall-clock second of the REGISTER that last set it (the later one is tried first).
    registered_at: float
    user_agent: str = ""
    #: The fingerprint of the account's credentials its REGISTER passed
    #: (``registrar.credentials``); "" for one read from the table before it was judged.
    credentials: str = ""
    #: The REGISTER's Path (RFC 3327) as one field value, its entries in order
    #: (``<sip:lb.example;lr>, <sip:edge.example;lr>``); "" when it came with none.
    path: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.account_id, self.contact)

    def expires_in(self, now: float) -> int:
        """Whole seconds left (the ``expires`` a 200 to REGISTER lists), at least 0."""
        return max(0, int(self.expires_at - now + 0.5))

    def live(self, now: float) -> bool:
        return self.expires_at > now

    @property
    def tombstone(self) -> bool:
        """The row an unregister leaves (``registrar.store``): registered and expired at the
        same second, which no REGISTER's binding is (a zero expiry unregisters)."""
        return self.expires_at == self.registered_at

    def request_uri(self, user: str) -> SipURI | None:
        """The Request-URI of a call to this contact: the Contact URI (RFC 3261 16.5: the
        registrar's location service retargets the request to it) with ``user`` (the number
        sent, escaped) as its user part, as every gateway gets the number; None when the
        Contact is not a sip: URI."""
        try:
            uri = parse_uri(self.contact)
        except SipParseError:
            return None
        if not isinstance(uri, SipURI):
            return None
        return dataclasses.replace(uri, user=user, password=None, headers={})

    @property
    def route(self) -> str:
        """The Route set of a call to this contact (RFC 3327 5.3): the Path it registered
        with, in the same order; "" for none."""
        return self.path

    @property
    def destination(self) -> tuple[Transport, Address] | None:
        """Where a call to this contact is sent: the first hop of its Path when it has one
        (over that URI's ``transport``, else the REGISTER's), else the REGISTER's source
        when NAT'd, else the Contact's host and port (5060 when they name none); None when
        the host to send to is a name (never the case for a NAT'd one, whose source is
        always an address)."""
        transport = Transport.TCP if self.transport == "tcp" else Transport.UDP
        if self.path:
            return _first_hop(self.path, transport)
        if self.nat:
            return transport, (self.source_ip, self.source_port)
        try:
            uri = parse_uri(self.contact)
        except SipParseError:
            return None
        if not isinstance(uri, SipURI):
            return None
        host = uri.host.strip("[]")
        return transport, (host, uri.port or 5060)


def _first_hop(path: str, transport: Transport) -> tuple[Transport, Address] | None:
    try:
        uri = parse_name_addr(split_commas(path)[0]).uri
    except (SipParseError, IndexError):
        return None
    if not isinstance(uri, SipURI) or host_ip(uri.host) is None:
        return None
    named = (uri.param("transport") or "").lower()
    if named in ("tcp", "udp"):
        transport = Transport.TCP if named == "tcp" else Transport.UDP
    return transport, (uri.host.strip("[]"), uri.port or 5060)


def host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address (IPv6 brackets or not); None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def reached_behind_nat(contact_host: str, source_ip: str, asked_rport: bool) -> bool:
    """Whether calls to a contact go to the REGISTER's source address and port.

    Yes when the client asked for ``rport`` (RFC 3581: it knows it may sit behind a NAT and
    wants answers where it sent from), and when the Contact's host is not the address the
    REGISTER came from (a private address behind a NAT, or a name). No when the Contact
    names the source address itself: then its port is the one it listens on, which may
    differ from the port it sent from. (A contact registered by a third party, from another
    address, is also reached at that address: the switch knows no better way to it.)
    """
    if asked_rport:
        return True
    ip = host_ip(contact_host)
    return ip is None or ip != host_ip(source_ip)


class Registrations:
    """The live bindings, by account and by source address. Single-threaded (the loop).

    Until :meth:`accept` is called every binding counts (a bare index, in tests); after it,
    only those whose ``credentials`` are the accepted fingerprint of their account: the
    others stay indexed (an expiry sweep drops them, ``every``) but no question sees them.
    """

    __slots__ = ("_accepted", "_by_account", "_by_source")

    #: Whether other processes write the same table (several workers): an unregister is
    #: then kept there as a tombstone (``BindingWriter.remove``).
    shared_table: ClassVar[bool] = False

    def __init__(self, bindings: Iterable[Binding] = ()) -> None:
        self._by_account: dict[str, dict[str, Binding]] = {}
        self._by_source: dict[tuple[str, int], dict[tuple[str, str], Binding]] = {}
        self._accepted: Mapping[str, str] | None = None
        for binding in bindings:
            self.put(binding)

    def __len__(self) -> int:
        return sum(1 for _ in Registrations.__iter__(self))

    def __iter__(self) -> Iterator[Binding]:
        """The bindings the configuration accepts (expired ones included)."""
        return (b for b in self.every() if self.accepts(b))

    def every(self) -> list[Binding]:
        """Every indexed binding, accepted or not (the sweep, a reload's drops)."""
        return [b for contacts in self._by_account.values() for b in contacts.values()]

    def accept(self, fingerprints: Mapping[str, str]) -> None:
        """Judge bindings by these fingerprints from now on (account id to the fingerprint
        of its credentials, for the accounts that may register: ``credentials.fingerprints``
        of the configuration in force)."""
        self._accepted = fingerprints

    def accepts(self, binding: Binding) -> bool:
        """Whether the configuration in force accepts ``binding``'s credentials."""
        accepted = self._accepted
        return accepted is None or accepted.get(binding.account_id) == binding.credentials

    def stamped(self, binding: Binding) -> Binding:
        """A binding without a fingerprint (a row written before schema migration 3 kept
        them) as made under the credentials in force; one that carries a fingerprint as it
        is (a row read back keeps the one its REGISTER passed, so a password changed while
        the switch was stopped cuts it off at the start)."""
        accepted = self._accepted
        if binding.credentials or accepted is None:
            return binding
        return dataclasses.replace(binding, credentials=accepted.get(binding.account_id, "-"))

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the index still while a REGISTER is decided and applied (nothing to hold in
        one process; several workers hold their shared lock, ``workers.registrations``, so
        that the contact cap counts the other workers' contacts too)."""
        return nullcontext()

    def of(self, account_id: str) -> dict[str, Binding]:
        """The account's accepted bindings by contact, expired ones included (a copy)."""
        return {c: b for c, b in self._by_account.get(account_id, {}).items() if self.accepts(b)}

    def indexed(self, account_id: str, contact: str) -> Binding | None:
        """The binding indexed for (account, contact), accepted or not, as this process has
        it (without taking other workers' changes first): what a change from another node
        is ordered against (``node_sync``)."""
        return self._by_account.get(account_id, {}).get(contact)

    def put(self, binding: Binding) -> None:
        """Add or replace the binding of its (account, contact); one without a fingerprint
        (an old row) as made under the credentials in force (``stamped``)."""
        binding = self.stamped(binding)
        old = self._by_account.get(binding.account_id, {}).get(binding.contact)
        if old is not None:
            self._unindex(old)
        self._by_account.setdefault(binding.account_id, {})[binding.contact] = binding
        source = (binding.source_ip, binding.source_port)
        self._by_source.setdefault(source, {})[binding.key] = binding

    def put_if_newer(self, binding: Binding) -> bool:
        """Put ``binding`` in this process's index unless the binding held for its contact
        was registered later, or is this very one; whether it was put.

        The rule the table follows (``registrar.store``: a row is replaced only by a binding
        registered at the same second or later), applied to every change that reaches an
        index from elsewhere (another node's notice, ``node_sync``; another worker's journal
        entry, ``workers.registrations``): those arrive in different orders at different
        processes, and only a rule that does not depend on the order leaves them alike."""
        current = self.indexed(binding.account_id, binding.contact)
        if current is not None and (
            current.registered_at > binding.registered_at or current == binding
        ):
            return False
        Registrations.put(self, binding)  # this process's index only, whatever the subclass
        return True

    def forget_if_older(
        self, account_id: str, contact: str, registered_at: float
    ) -> Binding | None:
        """``forget`` the binding of (account, contact) if it was registered at
        ``registered_at`` or earlier (a removal does not take a later REGISTER with it: the
        table's retire and tombstones follow the same rule); the binding forgotten."""
        current = self.indexed(account_id, contact)
        if current is None or current.registered_at > registered_at:
            return None
        return self.forget(account_id, contact)

    def restore(self, bindings: Iterable[Binding]) -> None:
        """At start: the bindings the database kept, each judged by the fingerprint it was
        made under (an old row without one: by the credentials in force, ``stamped``)."""
        for binding in bindings:
            Registrations.put(self, binding)

    def refresh(self) -> None:
        """Take changes made elsewhere (nothing here: one process has them all; several
        workers share theirs, ``workers.registrations``)."""

    async def catch_up(self) -> None:
        """Work too slow for a lookup, off the event loop (nothing here; a worker that fell
        behind the others reads the table again, ``workers.registrations``)."""

    def forget(self, account_id: str, contact: str) -> Binding | None:
        """Remove a binding from this process's index only: a change every process makes
        by itself (the expiry, a reload's drops), where ``remove`` is a REGISTER's."""
        return Registrations.remove(self, account_id, contact)

    def remove(self, account_id: str, contact: str, at: float | None = None) -> Binding | None:
        """A REGISTER's unregister of (account, contact); the binding removed. ``at``: the
        REGISTER's second, by which the workers' shared index orders it
        (``workers.registrations``); one process has no one to order it for."""
        contacts = self._by_account.get(account_id)
        if contacts is None or contact not in contacts:
            return None
        binding = contacts.pop(contact)
        if not contacts:
            del self._by_account[account_id]
        self._unindex(binding)
        return binding

    def _unindex(self, binding: Binding) -> None:
        source = (binding.source_ip, binding.source_port)
        keyed = self._by_source.get(source)
        if keyed is not None:
            keyed.pop(binding.key, None)
            if not keyed:
                del self._by_source[source]

    def contacts(self, account_id: str, now: float) -> list[Binding]:
        """The account's live contacts in the order calls try them: highest ``q`` first,
        then the most recently registered."""
        live = [
            b
            for b in self._by_account.get(account_id, {}).values()
            if b.live(now) and self.accepts(b)
        ]
        live.sort(key=lambda b: (-b.q, -b.registered_at))
        return live

    def account_at(
        self, ip: str, port: int, now: float, transport: str | None = None
    ) -> str | None:
        """The account with a live contact registered from (ip, port) over ``transport``
        (``udp``/``tcp``; None: either); None when there is none, or when contacts of
        several accounts registered from it (then the source alone cannot say which account
        calls, and digest must). The transport counts: a registration over TCP must not
        authorise a UDP INVITE whose source anyone can forge."""
        keyed = self._by_source.get((ip, port))
        if not keyed:
            return None
        accounts = {
            b.account_id
            for b in keyed.values()
            if b.live(now) and (transport is None or b.transport == transport) and self.accepts(b)
        }
        return accounts.pop() if len(accounts) == 1 else None

    def expired(self, now: float) -> list[Binding]:
        """Bindings whose expiry has passed, accepted or not (still indexed: ``forget``
        them)."""
        return [b for b in self.every() if not b.live(now)]

    def sources(self, now: float) -> set[str]:
        """The IP addresses live contacts registered from."""
        return {b.source_ip for b in Registrations.__iter__(self) if b.live(now)}
