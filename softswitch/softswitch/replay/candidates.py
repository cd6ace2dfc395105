"""``--deck ID=NEW.csv``: the candidate decks a replay puts in place of the configuration's.

A candidate replaces the ``[[rate_decks]]`` entry of the same ``id`` and keeps that entry's
reading settings (columns, delimiter, precision, rounding): a carrier's new deck comes in the
format of its old one. The configuration with the candidates in place is then loaded like
any other (``build_snapshot``), so a bad row of a candidate is reported by file and line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..config import Config

__all__ = ["CandidateError", "parse_deck_args", "with_candidates"]


class CandidateError(ValueError):
    """A ``--deck`` argument that cannot be used (says which and why)."""


def parse_deck_args(args: Sequence[str]) -> dict[str, Path]:
    """``ID=FILE`` arguments as deck id -> file; an id given twice is an error."""
    out: dict[str, Path] = {}
    for arg in args:
        deck_id, sep, file = arg.partition("=")
        deck_id, file = deck_id.strip(), file.strip()
        if not sep or not deck_id or not file:
            raise CandidateError(f"--deck {arg!r}: expected ID=FILE, e.g. carrier_a=new.csv")
        if deck_id in out:
            raise CandidateError(f"--deck {arg!r}: deck {deck_id!r} given twice")
        out[deck_id] = Path(file)
    return out


def with_candidates(config: Config, decks: dict[str, Path]) -> Config:
    """``config`` with each candidate file in place of its deck's file."""
    known = [spec.id for spec in config.rate_decks]
    for deck_id, file in decks.items():
        if deck_id not in known:
            raise CandidateError(
                f"--deck {deck_id}={file}: the configuration has no deck {deck_id!r}"
                f" (its decks: {', '.join(known) or 'none'})"
            )
        if not file.is_file():
            raise CandidateError(f"--deck {deck_id}={file}: no such file")
    specs = tuple(
        dataclasses.replace(spec, file=decks[spec.id].resolve()) if spec.id in decks else spec
        for spec in config.rate_decks
    )
    return dataclasses.replace(config, rate_decks=specs)
