"""One immutable view of the configuration and the decks, built once per (re)load.

A call takes the current ``Snapshot`` when its INVITE arrives and keeps it to the end, so a
SIGHUP reload (which builds a new one and swaps a single reference) never changes the rules
under a call in progress. Building it is where rate decks are read: every bad row of every
deck becomes a problem of one ``ConfigError`` naming the deck file, line and column, and the
switch keeps its old snapshot. ``deck_problems`` gives the same list for ``check-config``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import lcr

from ..config import Account, Config, ConfigError, ConfigProblem, Gateway, Route, RouteQuality

__all__ = ["Snapshot", "SourceIndex", "build_snapshot", "deck_problems"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def _address(ip: str) -> IPAddress | None:
    """``ip`` (brackets allowed) as an address, None if it is not one. Cached: parsing is
    most of a look-up's cost, and a source sends many packets (from many ports, behind a
    NAT or in a flood)."""
    try:
        return ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return None


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
        addr = _address(ip)
        if addr is None:
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
    """Config + loaded ``lcr.RateDeck`` per deck id + ``lcr.RouteTable``s per plan.

    A plan whose routes all serve any call (``cli = "any"``) has one table. One with
    caller-ID routes has two (``call.cli``): ``tables`` without its ``cli = "absent"``
    routes, for calls with a caller-ID, and ``tables_without_cli`` without its
    ``"required"`` ones, for calls without; :meth:`table` picks.
    """

    config: Config
    decks: Mapping[str, lcr.RateDeck]
    #: Per plan, the routes for calls with a caller-ID (every route of a plan without
    #: caller-ID routes).
    tables: Mapping[str, lcr.RouteTable]
    accounts: Mapping[str, Account]
    gateways: Mapping[str, Gateway]
    #: Digest user name -> account.
    users: Mapping[str, Account]
    sources: SourceIndex
    #: Whether any account authenticates by digest alone (then unknown sources get a 407).
    digest_only: bool
    #: (plan, route prefix) -> the route's ``quality``, for the routes that have one.
    qualities: Mapping[tuple[str, str], RouteQuality] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: Per plan with caller-ID routes, the routes for calls without a caller-ID.
    tables_without_cli: Mapping[str, lcr.RouteTable] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: (plan, cli view, entry index) of the routes with ``"acd"`` in their
    #: ``margin_duration``: the route prefix's live ACD is added to their margin durations
    #: (``call.routing``). Keyed by position, never by the entry's value: a route of another
    #: plan (or view) with equal fields but no ``"acd"`` must not pick it up.
    acd_routes: frozenset[tuple[str, bool, int]] = frozenset()

    def uses_acd(self, plan: str, result: lcr.RouteResult, *, cli: bool = True) -> bool:
        """Whether the route ``result`` came from (``lcr``'s ``RouteResult.route``: its
        index in the table of ``plan`` for calls with, or without, a caller-ID) wants the
        live ACD as a margin duration."""
        if not self.acd_routes or result.route is None:
            return False
        view = cli or plan not in self.tables_without_cli
        return (plan, view, result.route) in self.acd_routes

    def table(self, plan: str, *, cli: bool = True) -> lcr.RouteTable | None:
        """The plan's routes for a call with (``cli``) or without a caller-ID."""
        if not cli:
            table = self.tables_without_cli.get(plan)
            if table is not None:
                return table
        return self.tables.get(plan)

    def has_cli_routes(self, plan: str) -> bool:
        """Whether ``plan`` routes calls with and without a caller-ID differently."""
        return plan in self.tables_without_cli

    def accounts_for_source(self, ip: str, port: int) -> list[Account]:
        """Accounts with an ``ips`` rule matching the source, most specific rule first."""
        return self.sources.lookup(ip, port)


def _deck_problem(e: lcr.DeckError, spec_file: str, key: str) -> ConfigProblem:
    return ConfigProblem(e.path or spec_file, key, e.reason, line=e.line or None, column=e.column)


def _load_decks(
    config: Config, skip: Collection[int] = ()
) -> tuple[dict[str, lcr.RateDeck], list[ConfigProblem]]:
    """Every deck not in ``skip`` (indexes), read whole: its bad rows are all problems."""
    decks: dict[str, lcr.RateDeck] = {}
    problems: list[ConfigProblem] = []
    for i, spec in enumerate(config.rate_decks):
        if i in skip:
            continue
        key = f"rate_decks[{i}]"
        try:
            deck = lcr.RateDeck.from_csv(spec.file, strict=False, **spec.from_csv_kwargs())
        except lcr.DeckError as e:  # the file as a whole: its header, a missing column
            problems.append(_deck_problem(e, str(spec.file), key))
            continue
        except OSError as e:
            problems.append(
                ConfigProblem(config.source, f"{key}.file", f"cannot read {spec.file}: {e}")
            )
            continue
        except (lcr.LcrError, ValueError, TypeError) as e:
            problems.append(ConfigProblem(config.source, key, str(e)))
            continue
        problems.extend(
            _deck_problem(e, str(spec.file), key)
            if isinstance(e, lcr.DeckError)
            else ConfigProblem(str(spec.file), key, str(e))
            for e in deck.errors
        )
        decks[spec.id] = deck
    return decks, problems


def deck_problems(config: Config, known: Iterable[ConfigProblem] = ()) -> list[ConfigProblem]:
    """Every bad row of every deck of ``config`` (and whatever stops a deck loading at all).

    ``config`` may be the partial one of a ``ConfigError`` (``check-config`` lists its
    problems and the decks' in one run): decks with a problem among ``known`` under their
    own key are skipped, since their settings (or file) are not what the operator meant.
    """
    known_keys = [p.key for p in known]
    skip = {
        i
        for i in range(len(config.rate_decks))
        if any(k == f"rate_decks[{i}]" or k.startswith(f"rate_decks[{i}].") for k in known_keys)
    }
    return _load_decks(config, skip)[1]


def _targets(config: Config, route: Route) -> list[lcr.Target]:
    """The route's gateways as ``lcr`` targets: each gateway's priority and weight, unless
    the route sets its own for it (``gateways = [{ id = "a", weight = 70 }, ...]``)."""
    by_id = {g.id: g for g in config.gateways}
    targets = []
    for gid in route.gateways:
        g = by_id[gid]
        priority, weight = route.target_setting(gid)
        targets.append(
            lcr.Target(
                g.id,
                priority=g.priority if priority is None else priority,
                weight=g.weight if weight is None else weight,
                deck=g.rate_deck,
                enabled=g.enabled,
            )
        )
    return targets


def _entry(config: Config, route: Route) -> lcr.RouteEntry:
    return lcr.RouteEntry(
        route.prefix,
        _targets(config, route),
        strategy=route.strategy,
        carry_through=route.carry_through,
        max_rate=route.max_rate,
        min_margin=route.min_margin,
        caller_prefix=route.caller_prefix,
        windows=route.windows,
        margin_duration=route.fixed_durations,
    )


@dataclass(slots=True)
class _Tables:
    """What ``_build_tables`` makes: the two views' tables, the positions of their ACD
    routes (``Snapshot.acd_routes``) and the problems."""

    with_cli: dict[str, lcr.RouteTable] = field(default_factory=dict)
    without_cli: dict[str, lcr.RouteTable] = field(default_factory=dict)
    acd_routes: set[tuple[str, bool, int]] = field(default_factory=set)
    problems: list[ConfigProblem] = field(default_factory=list)


def _build_tables(config: Config, decks: Mapping[str, lcr.RateDeck]) -> _Tables:
    """Per plan, the table for calls with a caller-ID; and for the plans with caller-ID
    routes (``cli`` other than ``"any"``), the one for calls without."""
    built = _Tables()
    tables, without_cli, problems = built.with_cli, built.without_cli, built.problems
    for plan in config.plans:
        routes = [r for r in config.routes if r.plan == plan]
        views = [(tables, "absent", True)]
        if any(r.cli != "any" for r in routes):
            views.append((without_cli, "required", False))
        for out, left_out, view in views:
            kept = [r for r in routes if r.cli != left_out]
            entries = [_entry(config, r) for r in kept]
            built.acd_routes.update((plan, view, i) for i, r in enumerate(kept) if r.uses_acd)
            used = {t.deck for e in entries for t in e.targets if t.deck is not None}
            if not used <= decks.keys():
                break  # a deck that did not load: already a problem
            try:
                out[plan] = lcr.RouteTable(entries, {d: decks[d] for d in used})
            except (lcr.LcrError, ValueError, TypeError) as e:
                first = next(i for i, r in enumerate(config.routes) if r.plan == plan)
                reason = f"plan {plan!r}: {e}"
                problems.append(ConfigProblem(config.source, f"routes[{first}]", reason))
                break
    return built


def build_snapshot(config: Config) -> Snapshot:
    """Load every deck and build every routing table; ``ConfigError`` lists all problems.

    The config's own references were checked by ``load_config``; this adds every bad deck
    row (file, line, column from ``lcr.DeckError``) and anything ``lcr.RouteTable`` refuses.
    One bad row refuses the whole snapshot: a start or reload never runs on part of a deck.
    """
    decks, problems = _load_decks(config)
    built = _build_tables(config, decks)
    problems += built.problems
    if problems:
        raise ConfigError(problems)
    return Snapshot(
        config=config,
        decks=MappingProxyType(decks),
        tables=MappingProxyType(built.with_cli),
        accounts=MappingProxyType({a.id: a for a in config.accounts}),
        gateways=MappingProxyType({g.id: g for g in config.gateways}),
        users=MappingProxyType({a.username: a for a in config.accounts if a.username}),
        sources=SourceIndex(config.accounts),
        digest_only=any(a.uses_digest and not a.uses_ip for a in config.accounts),
        qualities=MappingProxyType(
            {(r.plan, r.prefix): r.quality for r in config.routes if r.quality is not None}
        ),
        tables_without_cli=MappingProxyType(built.without_cli),
        acd_routes=frozenset(built.acd_routes),
    )
