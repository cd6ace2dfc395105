"""Realistic synthetic rate decks for the benchmarks.

Real decks follow the E.164 plan: a 1-3 digit country code, then national destination codes
(mobile operators, cities) of varying depth, down to number blocks of up to 15 digits, with
many prefixes of one destination priced alike. This generator reproduces that shape from a
seed, so every run measures the same data.
"""

from __future__ import annotations

import random
from pathlib import Path

HEADER = (
    "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment,"
    "effective_from,effective_to\n"
)
COUNTRY_CODES = [
    "1", "7", "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45",
    "46", "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62",
    "63", "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    "211", "212", "213", "216", "218", "220", "221", "223", "225", "226", "227", "228", "229",
    "230", "231", "233", "234", "235", "237", "239", "240", "241", "242", "243", "244", "249",
    "250", "251", "252", "253", "254", "255", "256", "257", "258", "260", "261", "263", "264",
    "265", "266", "267", "268", "269", "290", "291", "297", "298", "299", "350", "351", "352",
    "353", "354", "355", "356", "357", "358", "359", "370", "371", "372", "373", "374", "375",
    "376", "377", "378", "380", "381", "382", "385", "386", "387", "389", "420", "421", "423",
    "500", "501", "502", "503", "504", "505", "506", "507", "509", "591", "592", "593", "595",
    "597", "598", "670", "672", "673", "674", "675", "676", "677", "678", "679", "680", "685",
    "852", "853", "855", "856", "880", "886", "960", "961", "962", "963", "964", "965", "966",
    "967", "968", "970", "971", "972", "973", "974", "975", "976", "977", "992", "993", "994",
    "995", "996", "998",
]  # fmt: skip


def prefixes(count: int, seed: int = 7) -> list[tuple[str, str]]:
    """``count`` unique (prefix, destination) pairs shaped like a carrier's A-Z deck."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    while len(out) < count:
        cc = rng.choice(COUNTRY_CODES)
        kind = rng.choice(["Mobile", "Fixed", "Mobile", "Premium"])
        operator = rng.randrange(1, 40)
        ndc = str(rng.randrange(10, 999))
        depth = rng.choices([0, 1, 2, 3, 4, 6, 8], weights=[4, 10, 20, 25, 20, 12, 9])[0]
        prefix = cc + ndc + "".join(rng.choice("0123456789") for _ in range(depth))
        prefix = prefix[:15]
        if prefix in seen:
            continue
        seen.add(prefix)
        out.append((prefix, f"{cc} {kind} Operator {operator}"))
    return out


def write_deck(path: Path, count: int, seed: int = 7) -> Path:
    """A deck CSV of ``count`` rows; one destination keeps one rate, as carriers price."""
    rng = random.Random(seed + 1)
    prices: dict[str, str] = {}
    with path.open("w") as out:
        out.write(HEADER)
        for prefix, destination in prefixes(count, seed):
            rate = prices.setdefault(destination, f"{rng.randrange(5, 50000) / 100000:.5f}")
            out.write(f"{prefix},{destination},{rate},0,1,1,2026-01-01,\n")
    return path


def numbers(deck_prefixes: list[tuple[str, str]], count: int, seed: int = 11) -> list[str]:
    """Dialed numbers: mostly extensions of deck prefixes, some with no match."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        if rng.random() < 0.95:
            prefix = rng.choice(deck_prefixes)[0]
        else:
            prefix = str(rng.randrange(100, 999))
        out.append((prefix + "".join(rng.choice("0123456789") for _ in range(12)))[:15])
    return out
