"""The ``lcr`` command: look up, cost and route numbers, check and diff decks, re-rate CDRs."""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from . import diff as _diff
from . import reference
from ._core import RateDeck
from .errors import DeckError, LcrError
from .plan import RouteEntry, Target
from .progress import Progress
from .windows import TimeWindow

__all__ = ["main"]

Deck = RateDeck | reference.RateDeck


def _parse_time(text: str) -> _dt.datetime:
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise LcrError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


def _money(text: str, what: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise LcrError(f"{what}: not a decimal number: {text!r}") from None


def _columns(pairs: Sequence[str]) -> dict[str, str | int]:
    mapping: dict[str, str | int] = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep:
            raise LcrError(f"--column expects FIELD=COLUMN, got {pair!r}")
        mapping[field] = int(column) if column.isdigit() else column
    return mapping


def _load(path: str, args: argparse.Namespace, **overrides: Any) -> Deck:
    options: dict[str, Any] = {
        "columns": _columns(args.column) or None,
        "strict": not args.lenient,
        "precision": args.precision,
        "rounding": args.rounding,
        "delimiter": args.delimiter,
    }
    options.update(overrides)
    progress = Progress(f"loading {path}", enabled=True if args.progress else None)
    try:
        if args.reference:
            return reference.RateDeck.from_csv(path, progress=progress, **options)
        deck: Deck = RateDeck.from_csv(path, progress=progress, **options)
        return deck
    finally:
        progress.close()


def _report_errors(deck: Deck) -> None:
    for error in deck.errors:
        print(f"warning: {error}", file=sys.stderr)


def cmd_lookup(args: argparse.Namespace) -> int:
    deck = _load(args.deck, args)
    _report_errors(deck)
    rate = deck.lookup(args.number, _parse_time(args.at) if args.at else None)
    if rate is None:
        print(f"{args.number}: no rate in force")
        return 1
    to = rate.effective_to.isoformat() if rate.effective_to else "-"
    since = rate.effective_from.isoformat() if rate.effective_from else "-"
    print(
        f"prefix={rate.prefix} destination={rate.destination!r} rate={rate.rate} "
        f"connect_fee={rate.connect_fee} increments={rate.initial_increment}/"
        f"{rate.subsequent_increment} effective={since}..{to}"
    )
    if args.duration is not None:
        print(f"billed={rate.billed_seconds(args.duration)}s cost={rate.cost(args.duration)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    deck = _load(args.deck, args)
    _report_errors(deck)
    print(f"{args.deck}: {len(deck)} rows, {deck.prefix_count} prefixes, {len(deck.errors)} errors")
    return 1 if deck.errors else 0


#: The keys of a routing table file; any other is refused, so that a misspelt one
#: (``margin_durations``) cannot silently drop a check.
_TABLE_KEYS = ("decks", "routes", "min_margin", "margin_duration")
#: A window's keys in the file, and the ``TimeWindow`` field each sets (``from``/``to`` as
#: in the switch's configuration, ``start``/``end`` as in Python).
_WINDOW_KEYS = {
    "days": "days",
    "start": "start",
    "from": "start",
    "end": "end",
    "to": "end",
    "tz": "tz",
}


def _clock(value: object) -> object:
    """A TOML local time (``start = 08:00:00``, unquoted) as ``"08:00"``; anything else as
    given, for ``TimeWindow`` to check."""
    if not isinstance(value, _dt.time) or value.tzinfo is not None:
        return value
    return value.strftime("%H:%M") if not (value.second or value.microsecond) else value


def _window(spec: object, where: str) -> TimeWindow:
    """``{days, start/from, end/to, tz}`` as a ``TimeWindow``; errors name ``where``."""
    if not isinstance(spec, dict):
        raise LcrError(
            f'{where}: expected a table such as {{ days = "mon-fri", start = "08:00", '
            f'end = "18:00", tz = "Europe/London" }}, got {spec!r}'
        )
    fields: dict[str, Any] = {}
    for key, value in spec.items():
        name = _WINDOW_KEYS.get(key)
        if name is None:
            raise LcrError(f"{where}: unknown key {key!r} (use days, start or from, end or to, tz)")
        if name in fields:
            raise LcrError(f"{where}: {key!r} sets {name!r} a second time")
        fields[name] = _clock(value) if name in ("start", "end") else value
    try:
        return TimeWindow(**fields)
    except LcrError as e:
        raise LcrError(f"{where}: {e}") from None


def _durations(value: object, where: str) -> list[int]:
    """``margin_duration``: seconds, one or a list (the range is the table's to check)."""
    seconds: list[int] = []
    for v in value if isinstance(value, list) else [value]:
        if not isinstance(v, int) or isinstance(v, bool):
            raise LcrError(f"{where}: margin_duration takes whole seconds, got {v!r}")
        seconds.append(v)
    return seconds


def _route_entry(route: dict[str, Any], where: str) -> RouteEntry:
    windows = route.get("windows", [])
    if not isinstance(windows, list):
        raise LcrError(f"{where}.windows: expected a list of tables, got {windows!r}")
    options = {k: v for k, v in route.items() if k not in ("targets", "windows")}
    if "margin_duration" in options:
        options["margin_duration"] = _durations(options["margin_duration"], where)
    try:
        targets = [Target(**t) for t in route.get("targets", [])]
        return RouteEntry(
            targets=targets,
            windows=[_window(w, f"{where}.windows[{j}]") for j, w in enumerate(windows)],
            **options,
        )
    except TypeError as e:
        raise LcrError(f"{where}: {e}") from None


def _table_from_toml(path: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Deck]]:
    try:
        with path.open("rb") as handle:
            doc = tomllib.load(handle, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        raise LcrError(f"{path}: {e}") from None
    for key in doc:
        if key not in _TABLE_KEYS:
            raise LcrError(f"{path}: unknown key {key!r} (use {', '.join(_TABLE_KEYS)})")
    decks: dict[str, Deck] = {}
    for name, spec in doc.get("decks", {}).items():
        if "file" not in spec:
            raise LcrError(f"{path}: decks.{name}: missing key 'file'")
        file = (path.parent / spec["file"]).as_posix()
        overrides = {k: spec[k] for k in ("precision", "rounding", "delimiter") if k in spec}
        if "columns" in spec:
            overrides["columns"] = dict(spec["columns"])
        decks[name] = _load(file, args, **overrides)
    entries = []
    for i, route in enumerate(doc.get("routes", [])):
        if not isinstance(route.get("prefix"), str):
            raise LcrError(f'{path}: routes[{i}].prefix must be a quoted string, e.g. "44"')
        entries.append(_route_entry(route, f"{path}: routes[{i}]"))
    margin_duration = _durations(doc.get("margin_duration", []), str(path))
    impl: Any = reference if args.reference else sys.modules[__package__]
    try:
        table = impl.RouteTable(
            entries, decks, min_margin=doc.get("min_margin"), margin_duration=margin_duration
        )
    except LcrError as e:
        raise LcrError(f"{path}: {e}") from None
    return table, decks


def cmd_route(args: argparse.Namespace) -> int:
    if args.table:
        table, _ = _table_from_toml(Path(args.table), args)
    else:
        if not args.deck:
            raise LcrError(
                "give a routing table (--table FILE.toml) or carriers' decks (--deck GW=FILE)"
            )
        decks: dict[str, Deck] = {}
        for pair in args.deck:
            gateway, sep, file = pair.partition("=")
            if not sep:
                raise LcrError(f"--deck expects GATEWAY=FILE, got {pair!r}")
            decks[gateway] = _load(file, args)
        entry = RouteEntry("", [Target(g, deck=g) for g in decks], strategy="lcr")
        impl: Any = reference if args.reference else sys.modules[__package__]
        table = impl.RouteTable([entry], decks)
    at = _parse_time(args.at) if args.at else None
    sell = None
    if args.sell:
        sell = _load(args.sell, args).lookup(args.number, at)
        if sell is None:
            raise LcrError(f"--sell {args.sell}: no rate in force for {args.number}")
    result = table.route(
        args.number,
        at,
        args.seed,
        exclude=args.exclude,
        sell_rate=_money(args.sell_rate, "--sell-rate") if args.sell_rate else None,
        sell=sell,
    )
    if args.explain:
        print(result.explain(), end="")
    else:
        for c in result.candidates:
            print(f"{c.gateway}\t{'' if c.rate is None else c.rate}")
    return 0 if result.candidates else 1


def cmd_rate(args: argparse.Namespace) -> int:
    deck = _load(args.deck, args)
    _report_errors(deck)
    cdrs = Path(args.cdrs)
    try:
        return _rate_file(cdrs, deck, args)
    except UnicodeDecodeError as e:
        raise LcrError(f"{cdrs}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _rate_file(cdrs: Path, deck: Deck, args: argparse.Namespace) -> int:
    total = cdrs.stat().st_size
    read = [0]
    progress = Progress(f"rating {cdrs}", enabled=True if args.progress else None)
    rated = failed = 0
    with (
        cdrs.open(newline="", encoding="utf-8-sig") as src,
        open(args.output, "w", newline="") as dst,
    ):
        reader = csv.DictReader(_counted(src, read))
        fields = list(reader.fieldnames or [])
        for needed in (args.number_column, args.start_column, args.duration_column):
            if needed not in fields:
                raise LcrError(f"{cdrs}: column {needed!r} not in the header {fields}")
        extra = ["prefix", "destination", "rate", "billed_seconds", "cost", "error"]
        writer = csv.DictWriter(dst, fieldnames=fields + [f for f in extra if f not in fields])
        writer.writeheader()
        chunk: list[dict[str, str]] = []

        def flush() -> None:
            nonlocal rated, failed
            good: list[tuple[dict[str, str], str, int, _dt.datetime]] = []
            for row in chunk:
                try:
                    number = row[args.number_column].strip()
                    reference.digits(number)
                    text = row[args.duration_column].strip()
                    if _NEGATIVE.fullmatch(text):
                        raise ValueError("negative duration")
                    if not _SECONDS.fullmatch(text):
                        raise ValueError(f"duration is not whole seconds: {text!r}")
                    duration = int(text)
                    good.append((row, number, duration, _parse_time(row[args.start_column])))
                except (LcrError, ValueError) as e:
                    row["error"] = str(e)
            if good:
                numbers = [g[1] for g in good]
                moments = [g[3] for g in good]
                rates = deck.lookup_many(numbers, moments)
                costs = deck.cost_many(numbers, [g[2] for g in good], moments)
                for (row, _, duration, _), rate, cost in zip(good, rates, costs, strict=True):
                    if rate is None or cost is None:
                        row["error"] = "no rate in force"
                        continue
                    row.update(
                        prefix=rate.prefix,
                        destination=rate.destination,
                        rate=str(rate.rate),
                        billed_seconds=str(rate.billed_seconds(duration)),
                        cost=str(cost),
                        error="",
                    )
            for row in chunk:
                if row.get("error"):
                    failed += 1
                else:
                    rated += 1
                writer.writerow(row)
            chunk.clear()
            progress(rated + failed, min(read[0], total), total)

        for row in reader:
            chunk.append(row)
            if len(chunk) >= 50_000:
                flush()
        flush()
    progress.close()
    print(f"rated {rated} CDRs, {failed} not rated -> {args.output}", file=sys.stderr)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    kinds = [kind for group in args.only for kind in _kinds(group)]
    at = _parse_time(args.at) if args.at else None
    old = _load(args.old, args)
    _report_errors(old)
    new = _load(args.new, args)
    _report_errors(new)
    result = _diff.diff(old, new, at)
    if kinds:
        result = result.only(kinds)
    if args.csv:
        _diff.write_csv(result, sys.stdout)
        print(result.summary(), file=sys.stderr)
    else:
        if result:
            for line in _diff.table_lines(result):
                print(line)
        print(result.summary())
    if result.next_start is not None and any(c.kind == "dates" for c in result.changes):
        moment = result.next_start.isoformat().replace("+00:00", "Z")
        print(
            f"note: changed rows start later, first at {moment}; compare then with --at {moment}",
            file=sys.stderr,
        )
    return 1 if result else 0


def _kinds(group: str) -> list[_diff.Kind]:
    """The kinds named in one ``--only`` value (comma-separated)."""
    kinds: list[_diff.Kind] = []
    for name in group.split(","):
        kind = next((k for k in _diff.KINDS if k == name.strip()), None)
        if kind is None:
            raise LcrError(f"--only: unknown change kind {name!r}; one of {', '.join(_diff.KINDS)}")
        kinds.append(kind)
    return kinds


_SECONDS = re.compile(r"[0-9]+")
_NEGATIVE = re.compile(r"-[0-9]+")


def _counted(lines: Iterable[str], read: list[int]) -> Iterator[str]:
    """The lines of a file, adding their length to ``read[0]`` for the progress display."""
    for line in lines:
        read[0] += len(line)
        yield line


def _deck_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("deck options")
    group.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="map a deck field to the file's column name (or 0-based index)",
    )
    group.add_argument(
        "--precision", type=int, default=6, help="decimal places of money (default 6)"
    )
    group.add_argument("--rounding", default="up", choices=["up", "down", "half_up"])
    group.add_argument("--delimiter", default=",")
    group.add_argument(
        "--lenient", action="store_true", help="skip bad rows (reported) instead of stopping"
    )
    group.add_argument(
        "--progress", action="store_true", help="show progress even when not on a terminal"
    )
    group.add_argument(
        "--reference", action="store_true", help="use the pure-Python reference implementation"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcr", description="Longest-prefix routing, least-cost ordering and call rating."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("lookup", help="the rate a deck applies to a number")
    p.add_argument("deck")
    p.add_argument("number")
    p.add_argument("--at", help="ISO 8601 time (default: now; no offset means UTC)")
    p.add_argument("--duration", type=int, help="also cost a call of this many seconds")
    _deck_options(p)
    p.set_defaults(run=cmd_lookup)

    p = commands.add_parser("check", help="validate a deck and report every bad row")
    p.add_argument("deck")
    _deck_options(p)
    p.set_defaults(run=cmd_check, lenient=True)

    p = commands.add_parser("route", help="order the carriers for a number (with --explain: why)")
    p.add_argument("number")
    p.add_argument("--table", help="routing table TOML ([decks.NAME] file=..., [[routes]] ...)")
    p.add_argument(
        "--deck",
        action="append",
        default=[],
        metavar="GATEWAY=FILE",
        help="a carrier's deck; without --table, all decks compete on LCR",
    )
    p.add_argument("--explain", action="store_true")
    p.add_argument("--at")
    p.add_argument("--seed", help="seed for weighted routing (e.g. a Call-ID)")
    p.add_argument("--exclude", action="append", default=[], metavar="GATEWAY")
    p.add_argument("--sell-rate", help="the customer's rate, for min_margin checks")
    p.add_argument(
        "--sell",
        metavar="FILE",
        help="the customer's deck: its rate for the number is the sell rate of the true-cost "
        "margin checks at the table's margin_duration",
    )
    _deck_options(p)
    p.set_defaults(run=cmd_route)

    p = commands.add_parser("rate", help="re-rate a CDR file (number, start, duration) in bulk")
    p.add_argument("cdrs")
    p.add_argument("--deck", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--number-column", default="number")
    p.add_argument("--start-column", default="start")
    p.add_argument("--duration-column", default="duration")
    _deck_options(p)
    p.set_defaults(run=cmd_rate)

    p = commands.add_parser(
        "diff",
        help="what a new deck changes: prefixes added/removed, rates up/down, fees, dates",
        description=(
            "Compare OLD and NEW decks. Prices are compared at one moment (--at, default "
            "now): per prefix, the row in force then in each deck, as a lookup picks it. Any "
            "other difference in a prefix's effective-dated rows (dates moved, a scheduled "
            "or expired version added, dropped or re-priced) is a 'dates' change showing "
            "both schedules. Exit status: 0 no differences, 1 differences, 2 trouble."
        ),
        epilog="kinds: " + ", ".join(_diff.KINDS),
    )
    p.add_argument("old", metavar="OLD", help="the deck in use")
    p.add_argument("new", metavar="NEW", help="the deck to compare with it")
    p.add_argument(
        "--at",
        help="compare the prices in force at this ISO 8601 time (default: now; no offset: UTC)",
    )
    p.add_argument("--csv", action="store_true", help="CSV on stdout, the summary on stderr")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KIND[,KIND]",
        help="list only these kinds of change (the exit status counts only them)",
    )
    _deck_options(p)
    p.set_defaults(run=cmd_diff)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except DeckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (LcrError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
