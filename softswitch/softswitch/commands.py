"""The operator's offline commands: ``check-config``, ``route`` and ``cdr``.

They run the very same code as the switch (``load_config``, ``build_snapshot``, the
``softswitch.call`` stages, ``CdrStore``'s reader), so what they say is what the switch
does. ``softswitch.cli`` parses the arguments; each function here takes plain values and
the output streams and returns the exit status (0 fine, 1 the operator's input is wrong).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol, TextIO

from .call.cli import Identity, Party, rewrite
from .call.limits import check_destination
from .call.live import LiveState
from .call.normalise import normalise
from .call.quality import GatewayAnswers, demote, describe, quality_of
from .call.refusal import EndReason, Refusal
from .call.rewrite import gateway_request_uri
from .call.routing import PrefixStats, live_acd, route_call
from .call.select import select_gateways
from .call.snapshot import Snapshot, build_snapshot, deck_problems
from .cdr import query_file, write_csv
from .config import (
    Account,
    Config,
    ConfigError,
    ConfigProblem,
    demo_config,
    demo_state_dir,
    load_config,
)

__all__ = [
    "RouteChoice",
    "RouteExplanation",
    "add_subcommands",
    "check_config",
    "dispatch",
    "explain_route",
    "list_cdrs",
    "live_route",
    "parse_time",
    "show_route",
]


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 date or date-time; without an offset it is UTC (like ``lcr``'s dates)."""
    value = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _config(path: str | None) -> Config:
    """The file's configuration, or the embedded demo's when no file is given."""
    return load_config(path) if path else demo_config(demo_state_dir())


def _check(path: str | None) -> tuple[Snapshot | None, list[ConfigProblem], list[ConfigProblem]]:
    """The snapshot (None when anything is wrong), every problem, and the warnings.

    The problems are those of the file and those of every deck together, so one run shows
    everything to fix: decks are read even when the file itself has problems.
    """
    try:
        cfg = _config(path)
    except ConfigError as e:
        if e.config is None:  # not readable, not TOML: nothing more to check
            return None, list(e.problems), []
        decks = deck_problems(e.config, e.problems)
        return None, [*e.problems, *decks], e.config.warnings()
    try:
        return build_snapshot(cfg), [], cfg.warnings()
    except ConfigError as e:
        return None, list(e.problems), cfg.warnings()


def _load(path: str | None, err: TextIO) -> Snapshot | None:
    snapshot, problems, _ = _check(path)
    if snapshot is None:
        for problem in problems:
            print(f"error: {problem}", file=err)
        print(f"{path or 'demo'}: {_plural(len(problems), 'problem')}", file=err)
    return snapshot


def check_config(path: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate the file and read every deck; print a summary, or every problem (exit 1).

    Warnings (a valid file that will not do what is meant, such as no accounts) are printed
    too but leave the exit status 0.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    snapshot, problems, warnings = _check(path)
    if snapshot is None:
        for problem in problems:
            print(f"error: {problem}", file=err)
    for warning in warnings:
        print(f"warning: {warning}", file=err)
    if snapshot is None:
        noted = f", {_plural(len(warnings), 'warning')}" if warnings else ""
        print(f"{path}: {_plural(len(problems), 'problem')}{noted}", file=err)
        return 1
    cfg = snapshot.config
    rates = sum(len(d) for d in snapshot.decks.values())
    counts = [
        _plural(len(cfg.accounts), "account"),
        _plural(len(cfg.gateways), "gateway"),
        _plural(len(cfg.rate_decks), "rate deck") + f" ({_plural(rates, 'rate')})",
        _plural(len(cfg.plans), "routing plan"),
        _plural(len(cfg.routes), "route"),
    ]
    noted = f"; {_plural(len(warnings), 'warning')}" if warnings else ""
    print(f"{path}: ok: {', '.join(counts)}{noted}", file=out)
    return 0


def _refused_line(refusal: Refusal) -> str:
    return f"refused: {refusal.status} {refusal.end_reason} (Q.850 {refusal.q850})" + (
        f": {refusal.detail}" if refusal.detail else ""
    )


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """One gateway the call would be sent to, in order: its buy rate and Request-URI."""

    gateway: str
    rate: Decimal | None
    transport: str
    request_uri: str


class LiveStats(GatewayAnswers, PrefixStats, Protocol):
    """What an explanation reads of the running switch's statistics: the gateways' answers
    (a route's ``quality``) and the route prefixes' ACD (``margin_duration`` with
    ``"acd"``)."""


@dataclass(frozen=True, slots=True)
class RouteExplanation:
    """The routing decision for an account and a number, as ``softswitch route`` prints it
    (:meth:`lines`) and the management API serves it (the same object, as JSON).

    ``refusal`` is the stage that refused the call (normalise, limits' destination checks,
    route), None when it routes; ``gateways`` empty with no refusal: every candidate is
    excluded (``excluded`` says why). ``explain`` is ``lcr``'s explanation.
    """

    account: str
    plan: str
    dialed: str
    number: str | None
    at: dt.datetime
    sell_rate: Decimal | None = None
    sell_deck: str | None = None
    explain: str = ""
    gateways: tuple[RouteChoice, ...] = ()
    excluded: tuple[tuple[str, str], ...] = ()
    refusal: Refusal | None = None
    #: The route's ``quality`` in words (None: the route has none), whether it was applied
    #: with live figures (the running switch) or not (offline), and what it demoted.
    quality: str | None = None
    quality_live: bool = False
    demoted: tuple[tuple[str, str], ...] = ()
    #: The caller-ID routed on, in words, when the plan has caller-ID routes or one was given.
    caller_id: str | None = None

    @property
    def routed(self) -> bool:
        """Whether the switch would send the call to a gateway."""
        return self.refusal is None and bool(self.gateways)

    def lines(self) -> list[str]:
        """The text of ``softswitch route`` (a line may hold ``lcr``'s multi-line text)."""
        out = [f"account {self.account} (plan {self.plan}), dialed {self.dialed}"]
        if self.number is None:  # refused by normalise
            return [*out, *self._refused()]
        out.append(f"number {self.number} at {self.at.isoformat(timespec='seconds')}")
        if self.caller_id is not None:
            out.append(self.caller_id)
        if self.refusal is not None:
            return [*out, *([self.explain] if self.explain else []), *self._refused()]
        if self.sell_rate is not None:
            out.append(f"sell rate {self.sell_rate} (deck {self.sell_deck})")
        out.append(self.explain.rstrip())
        out.append("gateways in order:")
        for i, g in enumerate(self.gateways, 1):
            rate = g.rate if g.rate is not None else "-"
            out.append(f"  {i}. {g.gateway:<16} rate {rate:<10} {g.transport} {g.request_uri}")
        if self.excluded:
            out.append("excluded:")
            out += [f"  {gateway_id:<16} {reason}" for gateway_id, reason in self.excluded]
        if self.quality is not None:
            out += self._quality()
        if not self.gateways:
            out.append("refused: no gateway can take the call")
        return out

    def _quality(self) -> list[str]:
        if not self.quality_live:
            return [
                f"quality: {self.quality}; that depends on the running switch's live figures,"
                " not applied here (softswitch route --live asks the running switch)"
            ]
        if not self.demoted:
            return [f"quality: {self.quality}; none demoted"]
        out = [f"demoted to the end (quality: {self.quality}):"]
        return out + [f"  {gateway_id:<16} {why}" for gateway_id, why in self.demoted]

    def _refused(self) -> list[str]:
        return [] if self.refusal is None else [_refused_line(self.refusal)]


def explain_route(
    snapshot: Snapshot,
    account: Account,
    number: str,
    *,
    at: dt.datetime | None = None,
    seed: str = "softswitch-route",
    live: LiveState | None = None,
    now: float = 0.0,
    stats: LiveStats | None = None,
    cli: str | bool = True,
) -> RouteExplanation:
    """The decision the switch makes for ``account`` dialing ``number`` at ``at`` (now).

    ``live`` (with ``now`` on its monotonic clock) is the running switch's state: gateways
    down, full, disabled by an operator or by an alarm, an account disabled by one. Without
    it every gateway is taken as up and idle: the exclusions are those of the configuration
    and the decks (disabled, no rate, above the rate ceiling, below the margin). ``stats``
    (the running switch's statistics, on the same clock) applies the route's ``quality``
    and gives the live ACD of routes with ``"acd"`` in ``margin_duration``, as the switch
    does; without them the explanation only says the route has a quality, and margins are
    checked at the fixed durations.

    ``cli``: the caller-ID the caller sends (its ``From`` user; the account's ``cli``
    rules apply), or True/False for a call with/without one.
    """
    when = at or dt.datetime.now(dt.UTC)
    dialed = number
    if account.tech_prefix and number.startswith(account.tech_prefix):
        number = number[len(account.tech_prefix) :]
    found = RouteExplanation(account.id, account.routing_plan, dialed, None, when)
    normalised = normalise(account, number)
    if isinstance(normalised, Refusal):
        return dataclasses.replace(found, refusal=normalised)
    found = dataclasses.replace(found, number=normalised)
    refusal = check_destination(account, normalised, live)
    if refusal is not None:
        return dataclasses.replace(found, refusal=refusal)
    present, caller_id = _caller_id(snapshot, account, cli)
    found = dataclasses.replace(found, caller_id=caller_id)
    caller = _caller_number(account, cli)
    acd = None if stats is None else live_acd(stats, now)
    plan = route_call(
        snapshot, account, normalised, when, seed, cli=present, caller=caller, acd=acd
    )
    if isinstance(plan, Refusal):
        table = snapshot.table(account.routing_plan, cli=present)
        explain = ""
        if table is not None and plan.end_reason is EndReason.NO_ROUTE:
            sell = (
                None
                if account.rate_deck is None
                else snapshot.decks[account.rate_deck].lookup(normalised, when)
            )
            sell_rate = None if sell is None else sell.rate
            result = table.route(
                normalised, when, seed, sell_rate=sell_rate, caller=caller, sell=sell
            )
            seconds = None
            wants_acd = snapshot.uses_acd(account.routing_plan, result, cli=present)
            if acd is not None and result.prefix is not None and wants_acd:
                seconds = acd(result.prefix)
            if seconds is not None:  # as ``route_call`` routed it: with the live ACD
                result = table.route(
                    normalised,
                    when,
                    seed,
                    sell_rate=sell_rate,
                    caller=caller,
                    sell=sell,
                    acd=seconds,
                )
            explain = result.explain()
        return dataclasses.replace(found, refusal=plan, explain=explain)
    quality = quality_of(snapshot, account, plan)
    if quality is not None and stats is not None:
        plan = demote(snapshot, account, plan, stats, now)
    usable, skipped = select_gateways(snapshot, plan, live or LiveState(), now)
    rates = {c.gateway: c.rate for c in plan.candidates}
    return dataclasses.replace(
        found,
        quality=None if quality is None else describe(quality),
        quality_live=stats is not None,
        demoted=plan.demoted,
        sell_rate=plan.sell_rate,
        sell_deck=account.rate_deck,
        explain=plan.explain,
        gateways=tuple(
            RouteChoice(g.id, rates.get(g.id), g.transport, str(gateway_request_uri(g, normalised)))
            for g in usable
        ),
        excluded=(*plan.rejected, *skipped),
    )


def _caller_id(snapshot: Snapshot, account: Account, cli: str | bool) -> tuple[bool, str | None]:
    """Whether the call has a caller-ID, and the line that says which routes that picks
    (None when the plan has no caller-ID routes and no caller-ID was given)."""
    routes = snapshot.has_cli_routes(account.routing_plan)
    if isinstance(cli, bool):
        if not routes:
            return cli, None
        return cli, "caller-ID: " + ("present" if cli else "none") + _which(cli)
    identity = rewrite(Identity(Party(cli, cli.lower() == "anonymous")), account.cli)
    number = identity.number
    shown = f"caller-ID {cli!r}"
    if identity.from_ is not None and identity.from_.user != cli:
        shown += f" sent as {identity.from_.user!r} (the account's cli rules)"
    if number is None:
        shown += ": not a caller-ID"
    return number is not None, shown + (_which(number is not None) if routes else "")


def _caller_number(account: Account, cli: str | bool) -> str | None:
    """The caller's number routes see (``caller_prefix``): ``--caller`` after the account's
    cli rules; None without one."""
    if isinstance(cli, bool):
        return None
    return rewrite(Identity(Party(cli, cli.lower() == "anonymous")), account.cli).number


def _which(present: bool) -> str:
    return "; the plan's routes for calls " + ("with one" if present else "without one")


def show_route(
    path: str | None,
    account_id: str,
    number: str,
    *,
    at: dt.datetime | None = None,
    seed: str = "softswitch-route",
    out: TextIO | None = None,
    err: TextIO | None = None,
    cli: str | bool = True,
) -> int:
    """Print the routing decision the switch would make for this account and number now.

    Live state belongs to the running switch, so every gateway is taken as up and idle
    here: exclusions shown are those of the configuration and the decks (disabled, no rate,
    above the rate ceiling, below the margin), and a route's ``quality`` is named but not
    applied (it needs live figures). The management API's ``/api/route`` (and
    ``softswitch route --live``, :func:`live_route`) asks the running switch.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    snapshot = _load(path, err)
    if snapshot is None:
        return 1
    account = snapshot.accounts.get(account_id)
    if account is None:
        print(f"error: {path}: no account with id {account_id!r}", file=err)
        return 1
    found = explain_route(snapshot, account, number, at=at, seed=seed, cli=cli)
    for line in found.lines():
        print(line, file=out)
    return 0 if found.routed else 1


def live_route(
    path: str | None,
    account_id: str,
    number: str,
    *,
    at: dt.datetime | None = None,
    seed: str = "softswitch-route",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``softswitch route --live``: the running switch's decision, from its management API
    (``GET /api/route`` at ``[management] listen``, with its ``token``), printed as
    :func:`show_route` prints its own, with the live state, the alarms and the route's
    quality demotion applied. Exit 1 when the call would not route or the API cannot say.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cfg = _config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=err)
        return 1
    management = cfg.management
    address = management.address
    if address is None:
        print(
            f"error: {path or 'demo'}: [management] listen is off: --live needs the API", file=err
        )
        return 1
    host, port = address
    if port == 0:
        print(
            "error: [management] listen has port 0: the running switch's port is unknown", file=err
        )
        return 1
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # all interfaces: this one
    shown = f"[{host}]" if ":" in host else host
    query = {"account": account_id, "number": number, "seed": seed}
    if at is not None:
        query["at"] = at.isoformat()
    url = f"http://{shown}:{port}/api/route?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url)
    if management.token is not None:
        request.add_header("Authorization", f"Bearer {management.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            reason = e.reason
        print(f"error: {url}: {e.code} {reason}", file=err)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = e.reason if isinstance(e, urllib.error.URLError) else e
        print(f"error: cannot ask the running switch at {url}: {why}", file=err)
        return 1
    print(answer["text"], end="", file=out)
    return 0 if answer.get("routed") else 1


def list_cdrs(
    path: str | None,
    *,
    since: dt.datetime | None = None,
    as_csv: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """List (or export as CSV) the CDRs in the configuration's database, oldest first."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cfg = _config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=err)
        return 1
    if isinstance(cfg.server.database, str):  # a postgresql:// URL (``softswitch.store``)
        import psycopg

        from .store.postgres import query_postgres
        from .store.postgres_connect import redacted

        try:
            records = query_postgres(cfg.server.database, since)
        except psycopg.Error as e:
            print(f"error: {redacted(cfg.server.database)}: {e}", file=err)
            return 1
    else:
        database = Path(cfg.server.database)
        if not database.is_file():
            print(f"error: no CDR database at {database}", file=err)
            return 1
        records = query_file(database, since)
    if as_csv:
        write_csv(records, out)
        return 0
    print(
        f"{'invite_at':<26} {'call_id':<24} {'account':<10} {'dialed':<16} {'gateway':<12} "
        f"{'status':>6} {'end_reason':<20} {'billsec':>7} {'sell':>10} {'buy':>10}",
        file=out,
    )
    for r in records:
        print(
            f"{r.invite_at.isoformat(timespec='seconds'):<26} {r.call_id[:24]:<24} "
            f"{r.account_id or '-':<10} {r.callee_dialed:<16} {r.gateway_id or '-':<12} "
            f"{r.status:>6} {r.end_reason:<20} {r.billsec:>7} "
            f"{r.sell_cost if r.sell_cost is not None else '-':>10} "
            f"{r.buy_cost if r.buy_cost is not None else '-':>10}",
            file=out,
        )
    print(_plural(len(records), "CDR"), file=out)
    return 0


class _CallerOption(argparse.Action):
    """``--cli``/``--caller NUMBER``: the number, and which of the two spellings was typed
    (``cli_flag``), so that an error names the option the user wrote."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.cli_flag = option_string


def _route_command(a: argparse.Namespace) -> int:
    cli: str | bool = False if a.no_cli else (a.cli if a.cli is not None else True)
    if a.live:
        if a.cli is not None or a.no_cli:
            # The management API's /api/route takes no caller-ID: the running switch
            # explains a call with one, as the offline default does.
            flag = "--no-cli" if a.no_cli else getattr(a, "cli_flag", None) or "--cli"
            print(
                f"error: {flag} is for the offline route, not --live (the running switch's"
                " /api/route takes no caller-ID)",
                file=sys.stderr,
            )
            return 2
        return live_route(a.config, a.account, a.number, at=a.at, seed=a.seed)
    return show_route(a.config, a.account, a.number, at=a.at, seed=a.seed, cli=cli)


def add_subcommands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check-config``, ``route``, ``cdr`` and the billing commands
    (``softswitch.billing.commands``) on the ``softswitch`` parser."""
    check = commands.add_parser(
        "check-config", help="validate a configuration and its rate decks (exit 0/1)"
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=lambda a: check_config(a.file))

    route = commands.add_parser(
        "route", help="print the routing decision for an account and a number"
    )
    route.add_argument("--config", metavar="FILE", help="default: the embedded demo")
    route.add_argument("--account", required=True, metavar="ID")
    route.add_argument("--at", type=parse_time, help="ISO time (default now; UTC if no offset)")
    route.add_argument("--seed", default="softswitch-route", help="the Call-ID weight routing uses")
    route.add_argument(
        "--live",
        action="store_true",
        help="ask the running switch (its management API at [management] listen): with its"
        " live state, alarms and quality demotion",
    )
    caller = route.add_mutually_exclusive_group()
    caller.add_argument(
        "--cli",
        "--caller",
        dest="cli",
        action=_CallerOption,
        metavar="NUMBER",
        help="the caller-ID the caller sends (its From user; the account's cli rules apply;"
        " routes' caller_prefix match it); default: a call with a caller-ID",
    )
    caller.add_argument(
        "--no-cli", action="store_true", help="a call without a caller-ID (non-CLI routes)"
    )
    route.add_argument("number", metavar="NUMBER")
    route.set_defaults(handler=_route_command)

    cdr = commands.add_parser("cdr", help="list or export CDRs")
    cdr.add_argument("--config", metavar="FILE", help="default: the embedded demo's CDRs")
    cdr.add_argument("--since", type=parse_time, help="ISO date or time (UTC if no offset)")
    cdr.add_argument("--csv", action="store_true", help="CSV on standard output")
    cdr.set_defaults(handler=lambda a: list_cdrs(a.config, since=a.since, as_csv=a.csv))

    from .store.migrate_command import add_subcommand as add_migrate_subcommand

    add_migrate_subcommand(commands)

    # balance, topup, adjust, refund, ledger, spend. Imported here: they use parse_time.
    from .billing.commands import add_subcommands as add_billing_subcommands

    add_billing_subcommands(commands)

    # replay: recorded calls re-routed and re-rated with candidate decks (docs/replay.md)
    from .replay.command import add_subcommand as add_replay_subcommand

    add_replay_subcommand(commands)


def dispatch(args: argparse.Namespace) -> int | None:
    """Run the subcommand registered by ``add_subcommands``; None for the others."""
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    return None if handler is None else handler(args)
