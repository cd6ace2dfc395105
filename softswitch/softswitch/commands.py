"""The operator's offline commands: ``check-config``, ``route`` and ``cdr``.

They run the very same code as the switch (``load_config``, ``build_snapshot``, the
``softswitch.call`` stages, ``CdrStore``'s reader), so what they say is what the switch
does. ``softswitch.cli`` parses the arguments; each function here takes plain values and
the output streams and returns the exit status (0 fine, 1 the operator's input is wrong).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .call.limits import check_destination
from .call.live import LiveState
from .call.normalise import normalise
from .call.refusal import EndReason, Refusal
from .call.rewrite import gateway_request_uri
from .call.routing import route_call
from .call.select import select_gateways
from .call.snapshot import Snapshot, build_snapshot, deck_problems
from .cdr import query_file, write_csv
from .config import (
    Config,
    ConfigError,
    ConfigProblem,
    demo_config,
    demo_state_dir,
    load_config,
)

__all__ = [
    "add_subcommands",
    "check_config",
    "dispatch",
    "list_cdrs",
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


def _refused(refusal: Refusal, out: TextIO) -> int:
    print(
        f"refused: {refusal.status} {refusal.end_reason} (Q.850 {refusal.q850})"
        + (f": {refusal.detail}" if refusal.detail else ""),
        file=out,
    )
    return 1


def show_route(
    path: str | None,
    account_id: str,
    number: str,
    *,
    at: dt.datetime | None = None,
    seed: str = "softswitch-route",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the routing decision the switch would make for this account and number now.

    Live state belongs to the running switch, so every gateway is taken as up and idle
    here: exclusions shown are those of the configuration and the decks (disabled, no rate,
    above the rate ceiling, below the margin).
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
    when = at or dt.datetime.now(dt.UTC)
    dialed = number
    if account.tech_prefix and number.startswith(account.tech_prefix):
        number = number[len(account.tech_prefix) :]
    normalised = normalise(account, number)
    print(f"account {account.id} (plan {account.routing_plan}), dialed {dialed}", file=out)
    if isinstance(normalised, Refusal):
        return _refused(normalised, out)
    print(f"number {normalised} at {when.isoformat(timespec='seconds')}", file=out)
    refusal = check_destination(account, normalised)
    if refusal is not None:
        return _refused(refusal, out)
    plan = route_call(snapshot, account, normalised, when, seed)
    if isinstance(plan, Refusal):
        table = snapshot.tables.get(account.routing_plan)
        if table is not None and plan.end_reason is EndReason.NO_ROUTE:
            print(table.route(normalised, when, seed).explain(), file=out)
        return _refused(plan, out)
    if plan.sell_rate is not None:
        print(f"sell rate {plan.sell_rate} (deck {account.rate_deck})", file=out)
    print(plan.explain.rstrip(), file=out)
    usable, skipped = select_gateways(snapshot, plan, LiveState(), 0.0)
    rates = {c.gateway: c.rate for c in plan.candidates}
    print("gateways in order:", file=out)
    for i, gateway in enumerate(usable, 1):
        rate = rates.get(gateway.id)
        uri = gateway_request_uri(gateway, normalised)
        print(
            f"  {i}. {gateway.id:<16} rate {rate if rate is not None else '-':<10} "
            f"{gateway.transport} {uri}",
            file=out,
        )
    excluded = list(plan.rejected) + skipped
    if excluded:
        print("excluded:", file=out)
        for gateway_id, reason in excluded:
            print(f"  {gateway_id:<16} {reason}", file=out)
    if not usable:
        print("refused: no gateway can take the call", file=out)
        return 1
    return 0


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


def add_subcommands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check-config``, ``route`` and ``cdr`` on the ``softswitch`` parser."""
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
    route.add_argument("number", metavar="NUMBER")
    route.set_defaults(
        handler=lambda a: show_route(a.config, a.account, a.number, at=a.at, seed=a.seed)
    )

    cdr = commands.add_parser("cdr", help="list or export CDRs")
    cdr.add_argument("--config", metavar="FILE", help="default: the embedded demo's CDRs")
    cdr.add_argument("--since", type=parse_time, help="ISO date or time (UTC if no offset)")
    cdr.add_argument("--csv", action="store_true", help="CSV on standard output")
    cdr.set_defaults(handler=lambda a: list_cdrs(a.config, since=a.since, as_csv=a.csv))


def dispatch(args: argparse.Namespace) -> int | None:
    """Run the subcommand registered by ``add_subcommands``; None for the others."""
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    return None if handler is None else handler(args)
