"""A rate deck of real E.164 prefixes, from the data the ``phonenumbers`` package ships.

The synthetic decks of ``deckgen.py`` are shaped like an A-Z deck but drawn at random; this
one has the prefixes a carrier's deck is actually made of: every country calling code, the
mobile operators' number ranges (``phonenumbers.carrierdata``) and the geographic area codes
(``phonenumbers.geodata``), some 317,000 prefixes of 1 to 9 digits. Their tree is deep and
uneven where real traffic is (the US, China, Brazil), which a random deck does not show.

Prices are drawn from a seed, one per destination as carriers price, so every run with the
same ``phonenumbers`` version measures the same data.
"""

from __future__ import annotations

import random
from pathlib import Path

import phonenumbers
from phonenumbers.carrierdata import CARRIER_DATA
from phonenumbers.geodata import GEOCODE_DATA

HEADER = (
    "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment,"
    "effective_from,effective_to\n"
)

#: The share of dialled numbers that extend a deck prefix; the rest match nothing.
MATCHING = 0.95


def _name(names: dict[str, str]) -> str:
    """The English name of a prefix, else any; commas would split the CSV field."""
    name = names.get("en") or next(iter(names.values()), "")
    return name.replace(",", "").replace('"', "").strip()


def real_prefixes() -> list[tuple[str, str]]:
    """Every (prefix, destination) of the installed ``phonenumbers``, prefixes ascending.

    A prefix listed both as a mobile range and as a geographic one (China's mobile ranges
    carry a city) is taken as mobile, as carriers price it.
    """
    codes = {
        str(code): regions[0] for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()
    }

    def region(prefix: str) -> str:
        for length in (1, 2, 3):
            if prefix[:length] in codes:
                return codes[prefix[:length]]
        raise ValueError(f"prefix {prefix!r} has no country calling code")

    deck: dict[str, str] = {code: f"{region} Fixed" for code, region in codes.items()}
    for prefix, names in GEOCODE_DATA.items():
        if prefix not in codes:
            deck[prefix] = f"{region(prefix)} Fixed {_name(names)}".strip()
    for prefix, names in CARRIER_DATA.items():
        if prefix not in codes:
            deck[prefix] = f"{region(prefix)} Mobile {_name(names)}".strip()
    return sorted(deck.items())


def write_deck(path: Path, seed: int = 7) -> Path:
    """The real-prefix deck as a CSV; one destination keeps one rate."""
    rng = random.Random(seed)
    prices: dict[str, str] = {}
    with path.open("w") as out:
        out.write(HEADER)
        for prefix, destination in real_prefixes():
            rate = prices.setdefault(destination, f"{rng.randrange(5, 50000) / 100000:.5f}")
            out.write(f"{prefix},{destination},{rate},0,1,1,2026-01-01,\n")
    return path


def unassigned_heads(deck_prefixes: list[tuple[str, str]]) -> list[str]:
    """Three-digit starts, not 0, that no deck prefix covers (no country calling code begins
    them).

    Every prefix starts with its country code, itself in the deck, so a number starting
    with one of these matches nothing, as a misdialled or unassigned code does.
    """
    short = {prefix for prefix, _ in deck_prefixes if len(prefix) <= 3}
    return [
        head
        for head in (str(n) for n in range(100, 1000))
        if not any(head[:k] in short for k in range(4))
    ]


def numbers(deck_prefixes: list[tuple[str, str]], count: int, seed: int = 11) -> list[str]:
    """Dialled numbers of E.164 lengths: ``MATCHING`` of them extend a random deck prefix
    (so all prefixes, short and long, are drawn alike), the rest start with an unassigned
    code."""
    rng = random.Random(seed)
    heads = unassigned_heads(deck_prefixes)
    out = []
    for _ in range(count):
        start = rng.choice(deck_prefixes)[0] if rng.random() < MATCHING else rng.choice(heads)
        length = max(len(start) + 1, rng.choice((11, 12, 12, 13)))
        out.append(start + "".join(rng.choice("0123456789") for _ in range(length - len(start))))
    return out
