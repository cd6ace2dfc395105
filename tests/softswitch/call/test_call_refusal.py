"""The end reason table, the Refusal value and the RFC 3398 cause mapping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from softswitch.call.refusal import (
    END_REASONS,
    PUBLIC_TEXT,
    Q850_TEXT,
    cause_text,
    q850_for_status,
    refuse,
)
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
    found = re.finditer(r"^\| `(\w+)` \| (\d+) \| (\d+) \| ([^|]+) \|", doc, re.MULTILINE)
    rows = {m.group(1): (int(m.group(2)), int(m.group(3)), m.group(4)) for m in found}
    assert {name: row[:2] for name, row in rows.items()} == END_REASONS
    assert {name: row[2] for name, row in rows.items()} == PUBLIC_TEXT


def _causes_the_switch_sends() -> set[int]:
    relayed = {q850_for_status(status) for status in range(100, 700)}
    return {cause for _, cause in END_REASONS.values()} | relayed


@pytest.mark.parametrize("cause", sorted(_causes_the_switch_sends()))
def test_every_cause_the_switch_sends_has_its_q850_text(cause: int) -> None:
    assert cause in Q850_TEXT
    assert cause_text(cause) == Q850_TEXT[cause]


@pytest.mark.parametrize("end_reason", sorted(END_REASONS))
def test_the_reason_text_is_the_text_of_the_cause_sent(end_reason: str) -> None:
    r = refuse(end_reason)
    assert r.reason == Q850_TEXT[r.q850] == PUBLIC_TEXT[end_reason]
    parsed = parse_reason(r.reason_header())
    assert (parsed.cause, parsed.text) == (r.q850, Q850_TEXT[r.q850])


def test_a_cause_taken_from_a_gateway_status_brings_its_own_text() -> None:
    """all_gateways_failed answered 500: cause 41 "temporary failure", not 34's text."""
    r = refuse("all_gateways_failed", "gwa: 503", status=500).with_cause(q850_for_status(500))
    assert (r.status, r.q850, r.end_reason) == (500, 41, "all_gateways_failed")
    assert r.reason_header() == 'Q.850;cause=41;text="temporary failure"'
    assert r.detail == "gwa: 503"


@pytest.mark.parametrize(
    ("cause", "text"),
    [
        (17, "user busy"),
        (34, "no circuit/channel available"),
        (41, "temporary failure"),
        (2, "normal, unspecified"),  # unlisted: the unspecified cause of its class
        (42, "resource unavailable, unspecified"),
        (50, "service or option not available, unspecified"),
        (65, "service or option not implemented, unspecified"),
        (99, "protocol error, unspecified"),
        (120, "interworking, unspecified"),
    ],
)
def test_cause_text(cause: int, text: str) -> None:
    assert cause_text(cause) == text


def test_refusal_carries_code_reason_header_and_detail() -> None:
    r = refuse("all_gateways_failed", "gwa: 503, gwb: timeout")
    assert (r.status, r.end_reason, r.q850) == (503, "all_gateways_failed", 34)
    assert r.reason_header() == 'Q.850;cause=34;text="no circuit/channel available"'
    parsed = parse_reason(r.reason_header())
    assert (parsed.protocol, parsed.cause, parsed.text) == (
        "Q.850",
        34,
        "no circuit/channel available",
    )
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
