"""One immutable view of the configuration and the decks, built once per (re)load.

A call takes the current ``Snapshot`` when its INVITE arrives and keeps it to the end, so a
SIGHUP reload (which builds a new one and swaps a single reference) never changes the rules
under a call in progress. Building it is where rate decks are read: a bad row becomes a
``ConfigError`` naming the deck file, line and column, and the switch keeps its old snapshot.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import lcr

from ..config import Account, Config, ConfigError, ConfigProblem, Gateway

__all__ = ["Snapshot", "SourceIndex", "build_snapshot"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourceIndex:
    """Accounts by source address, for ``authorise`` on every INVITE.

    Single-address rules (``/32``, ``/128``: the common case) are a dict look-up; network
    rules are scanned, longest prefix first. Built once per snapshot, never changed.
    """

    __slots__ = ("_exact", "_networks")

    def __init__(self, accounts: tuple[Account, ...]) -> None:
        # (prefixlen, has port, file order, port, account), best first after sorting.
        self._exact: dict[IPAddress, list[tuple[int, int, int, int | None, Account]]] = {}
        self._networks: list[tuple[IPNetwork, int, int, int | None, Account]] = []
        for order, account in enumerate(accounts):
            for rule in account.ips:
                net = rule.network
                has_port = 0 if rule.port is None else 1
                if net.num_addresses == 1:
                    self._exact.setdefault(net.network_address, []).append(
                        (net.prefixlen, has_port, order, rule.port, account)
                    )
                else:
                    self._networks.append((net, has_port, order, rule.port, account))
        self._networks.sort(key=lambda t: (-t[0].prefixlen, -t[1], t[2]))

    def lookup(self, ip: str, port: int) -> list[Account]:
        """Accounts with a rule matching (ip, port), most specific rule first, no repeats.

        Specificity: a longer network prefix, then a rule naming the port; ties keep file
        order. An unparsable address matches nothing.
        """
        try:
            addr: IPAddress = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return []
        hits: list[tuple[int, int, int, Account]] = []
        for prefixlen, has_port, order, rule_port, account in self._exact.get(addr, ()):
            if rule_port is None or rule_port == port:
                hits.append((-prefixlen, -has_port, order, account))
        for net, has_port, order, rule_port, account in self._networks:
            if (rule_port is None or rule_port == port) and addr in net:
                hits.append((-net.prefixlen, -has_port, order, account))
        hits.sort(key=lambda t: t[:3])
        seen: set[str] = set()
        out: list[Account] = []
        for *_, account in hits:
            if account.id not in seen:
                seen.add(account.id)
                out.append(account)
        return out


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """Config + loaded ``lcr.RateDeck`` per deck id + one ``lcr.RouteTable`` per plan."""

    config: Config
    decks: Mapping[str, lcr.RateDeck]
    tables: Mapping[str, lcr.RouteTable]
    accounts: Mapping[str, Account]
    gateways: Mapping[str, Gateway]
    #: Digest user name -> account.
    users: Mapping[str, Account]
    sources: SourceIndex
    #: Whether any account authenticates by digest alone (then unknown sources get a 407).
    digest_only: bool

    def accounts_for_source(self, ip: str, port: int) -> list[Account]:
        """Accounts with an ``ips`` rule matching the source, most specific rule first."""
        return self.sources.lookup(ip, port)


def _load_decks(config: Config) -> tuple[dict[str, lcr.RateDeck], list[ConfigProblem]]:
    decks: dict[str, lcr.RateDeck] = {}
    problems: list[ConfigProblem] = []
    for i, spec in enumerate(config.rate_decks):
        key = f"rate_decks[{i}]"
        try:
            decks[spec.id] = lcr.RateDeck.from_csv(spec.file, **spec.from_csv_kwargs())
        except lcr.DeckError as e:
            problems.append(
                ConfigProblem(
                    e.path or str(spec.file),
                    key,
                    e.reason,
                    line=e.line or None,
                    column=e.column,
                )
            )
        except OSError as e:
            problems.append(
                ConfigProblem(config.source, f"{key}.file", f"cannot read {spec.file}: {e}")
            )
        except (lcr.LcrError, ValueError, TypeError) as e:
            problems.append(ConfigProblem(config.source, key, str(e)))
    return decks, problems


def _targets(config: Config, gateway_ids: tuple[str, ...]) -> list[lcr.Target]:
    by_id = {g.id: g for g in config.gateways}
    targets = []
    for gid in gateway_ids:
        g = by_id[gid]
        targets.append(
            lcr.Target(
                g.id, priority=g.priority, weight=g.weight, deck=g.rate_deck, enabled=g.enabled
            )
        )
    return targets


def _build_tables(
    config: Config, decks: Mapping[str, lcr.RateDeck]
) -> tuple[dict[str, lcr.RouteTable], list[ConfigProblem]]:
    tables: dict[str, lcr.RouteTable] = {}
    problems: list[ConfigProblem] = []
    for plan in config.plans:
        entries = [
            lcr.RouteEntry(
                r.prefix,
                _targets(config, r.gateways),
                strategy=r.strategy,
                carry_through=r.carry_through,
                max_rate=r.max_rate,
                min_margin=r.min_margin,
            )
            for r in config.routes
            if r.plan == plan
        ]
        used = {t.deck for e in entries for t in e.targets if t.deck is not None}
        try:
            tables[plan] = lcr.RouteTable(entries, {d: decks[d] for d in used})
        except (lcr.LcrError, ValueError, TypeError) as e:
            first = next(i for i, r in enumerate(config.routes) if r.plan == plan)
            problems.append(ConfigProblem(config.source, f"routes[{first}]", f"plan {plan!r}: {e}"))
    return tables, problems


def build_snapshot(config: Config) -> Snapshot:
    """Load every deck and build every routing table; ``ConfigError`` lists all problems.

    The config's own references were checked by ``load_config``; this adds the deck rows
    (file, line, column from ``lcr.DeckError``) and anything ``lcr.RouteTable`` refuses.
    """
    decks, problems = _load_decks(config)
    if problems:
        raise ConfigError(problems)
    tables, problems = _build_tables(config, decks)
    if problems:
        raise ConfigError(problems)
    return Snapshot(
        config=config,
        decks=MappingProxyType(decks),
        tables=MappingProxyType(tables),
        accounts=MappingProxyType({a.id: a for a in config.accounts}),
        gateways=MappingProxyType({g.id: g for g in config.gateways}),
        users=MappingProxyType({a.username: a for a in config.accounts if a.username}),
        sources=SourceIndex(config.accounts),
        digest_only=any(a.uses_digest and not a.uses_ip for a in config.accounts),
    )
