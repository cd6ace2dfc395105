"""The end reason table, the Refusal value and the RFC 3398 cause mapping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from softswitch.call.refusal import END_REASONS, PUBLIC_TEXT, q850_for_status, refuse
from softswitch.sip import parse_reason

DOCS = Path(__file__).parents[3] / "docs" / "cdr.md"

ISSUE_REASONS = [
    "normal_clearing",
    "caller_cancelled",
    "no_route",
    "all_gateways_failed",
    "busy",
    "no_answer",
    "auth_failed",
    "limit_exceeded",
    "max_duration",
    "forbidden_destination",
    "account_disabled",
    "gateway_timeout",
]


@pytest.mark.parametrize("end_reason", ISSUE_REASONS)
def test_every_reason_the_issue_names_is_in_the_table(end_reason: str) -> None:
    status, cause = END_REASONS[end_reason]
    assert 200 <= status <= 699
    assert 1 <= cause <= 127


def test_every_reason_has_public_text_and_is_documented() -> None:
    assert set(PUBLIC_TEXT) == set(END_REASONS)
    doc = DOCS.read_text()
    rows = dict(
        (m.group(1), (int(m.group(2)), int(m.group(3))))
        for m in re.finditer(r"^\| `(\w+)` \| (\d+) \| (\d+) \|", doc, re.MULTILINE)
    )
    assert rows == END_REASONS


def test_refusal_carries_code_reason_header_and_detail() -> None:
    r = refuse("all_gateways_failed", "gwa: 503, gwb: timeout")
    assert (r.status, r.end_reason, r.q850) == (503, "all_gateways_failed", 34)
    assert r.reason_header() == 'Q.850;cause=34;text="no circuit available"'
    parsed = parse_reason(r.reason_header())
    assert (parsed.protocol, parsed.cause, parsed.text) == ("Q.850", 34, "no circuit available")
    assert r.headers() == [("Reason", r.reason_header())]
    assert "gwa" not in r.reason_header()  # detail stays internal
    assert refuse("busy", status=600).status == 600


def test_unknown_end_reason_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        refuse("bogus")


def test_old_spellings_map_to_the_documented_ones() -> None:
    assert refuse("shutting_down").end_reason == "system_shutdown"


@pytest.mark.parametrize(
    ("status", "cause"), [(200, 16), (404, 1), (486, 17), (503, 41), (408, 102), (599, 31)]
)
def test_q850_for_status(status: int, cause: int) -> None:
    assert q850_for_status(status) == cause
