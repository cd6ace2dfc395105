"""Hostile SIP messages of nearly 64 KiB through the whole receive path, in µs per KiB.

Each shape of ``tests/softswitch/sip/test_adversarial_parsing.py`` (folds, whitespace
runs, thousands of commas, parameters, quotes, angle brackets, header lines, digest
parameters) is sized just under the 64 KiB message limit and run through what the switch
does with a received message: ``parse_message``, ``validate_request`` or
``validate_response``, every typed property the proxy reads and the digest credentials
parser, with the parse caches emptied first (a hostile peer varies an octet per message).
The figure to read is the µs per KiB printed beside each shape: a linear parser keeps it
flat as messages grow, and it is what one such datagram costs the event loop.  Run
explicitly, never as a timed assertion:

    python -m pytest benches/test_bench_sip_adversarial.py --benchmark-only -s
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

_SHAPES_FILE = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "softswitch"
    / "sip"
    / "test_adversarial_parsing.py"
)


def _load_shapes() -> ModuleType:
    """The test module, loaded by path: the shapes are defined once, beside their bounds."""
    spec = importlib.util.spec_from_file_location("sip_adversarial_shapes", _SHAPES_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shapes = _load_shapes()


def _cold_exercise(data: bytes) -> None:
    shapes.timed(data)  # empties the parse caches, then parses, validates and reads


@pytest.mark.parametrize("name", list(shapes.SHAPES))
def test_adversarial_64k(benchmark: Any, name: str) -> None:
    data = shapes.sized(shapes.SHAPES[name], shapes.MESSAGE_LIMIT)
    benchmark.pedantic(_cold_exercise, args=(data,), rounds=5, iterations=1, warmup_rounds=1)
    best = benchmark.stats.stats.min
    kib = len(data) / 1024
    print(f"\n{name:45s} {len(data):6d} octets  {best * 1e6 / kib:8.1f} µs/KiB", end="")
