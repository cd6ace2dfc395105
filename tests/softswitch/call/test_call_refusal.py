"""The end reason table, the Refusal value and the RFC 3398 cause mapping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from softswitch.call.refusal import (
    ALIASES,
    END_REASONS,
    PUBLIC_TEXT,
    Q850_TEXT,
    EndReason,
    cause_text,
    q850_for_status,
    refuse,
)
from softswitch.sip import parse_reason

DOCS = Path(__file__).parents[3] / "docs" / "cdr.md"

ISSUE_REASONS = [
    EndReason.NORMAL_CLEARING,
    EndReason.CALLER_CANCELLED,
    EndReason.NO_ROUTE,
    EndReason.ALL_GATEWAYS_FAILED,
    EndReason.BUSY,
    EndReason.NO_ANSWER,
    EndReason.AUTH_FAILED,
    EndReason.LIMIT_EXCEEDED,
    EndReason.MAX_DURATION,
    EndReason.FORBIDDEN_DESTINATION,
    EndReason.ACCOUNT_DISABLED,
    EndReason.GATEWAY_TIMEOUT,
]


@pytest.mark.parametrize("end_reason", ISSUE_REASONS)
def test_every_reason_the_issue_names_is_in_the_table(end_reason: EndReason) -> None:
    status, cause = END_REASONS[end_reason]
    assert 200 <= status <= 699
    assert 1 <= cause <= 127


def test_the_table_and_the_public_texts_cover_exactly_the_end_reasons() -> None:
    assert list(END_REASONS) == list(EndReason)  # in the enum's order, which the docs follow
    assert set(PUBLIC_TEXT) == set(EndReason)
    assert set(ALIASES.values()) <= set(EndReason)
    assert not set(ALIASES) & {r.value for r in EndReason}


def documented_end_reasons() -> dict[str, tuple[int, int, str]]:
    """docs/cdr.md's end reason table: name -> (SIP code, Q.850 cause, Reason text)."""
    doc = DOCS.read_text()
    found = re.finditer(r"^\| `(\w+)` \| (\d+) \| (\d+) \| ([^|]+) \|", doc, re.MULTILINE)
    return {m.group(1): (int(m.group(2)), int(m.group(3)), m.group(4).strip()) for m in found}


def test_every_end_reason_is_documented_and_every_documented_one_exists() -> None:
    rows = documented_end_reasons()
    assert list(rows) == [r.value for r in EndReason]  # both ways, in the same order
    assert {EndReason(name): row[:2] for name, row in rows.items()} == END_REASONS
    assert {EndReason(name): row[2] for name, row in rows.items()} == PUBLIC_TEXT


def test_an_end_reason_is_its_text() -> None:
    """StrEnum: what the CDR stores is the documented text, and text read back compares equal."""
    assert EndReason.NO_ACK == "no_ack"
    assert str(EndReason.NO_ACK) == f"{EndReason.NO_ACK}" == "no_ack"
    assert EndReason("system_failure") is EndReason.SYSTEM_FAILURE
    assert refuse("busy").end_reason is EndReason.BUSY  # a string is looked up


def _causes_the_switch_sends() -> set[int]:
    relayed = {q850_for_status(status) for status in range(100, 700)}
    return {cause for _, cause in END_REASONS.values()} | relayed


@pytest.mark.parametrize("cause", sorted(_causes_the_switch_sends()))
def test_every_cause_the_switch_sends_has_its_q850_text(cause: int) -> None:
    assert cause in Q850_TEXT
    assert cause_text(cause) == Q850_TEXT[cause]


@pytest.mark.parametrize("end_reason", list(EndReason))
def test_the_reason_text_is_the_text_of_the_cause_sent(end_reason: EndReason) -> None:
    r = refuse(end_reason)
    assert r.reason == Q850_TEXT[r.q850] == PUBLIC_TEXT[end_reason]
    parsed = parse_reason(r.reason_header())
    assert (parsed.cause, parsed.text) == (r.q850, Q850_TEXT[r.q850])


def test_a_cause_taken_from_a_gateway_status_brings_its_own_text() -> None:
    """all_gateways_failed answered 500: cause 41 "temporary failure", not 34's text."""
    r = refuse(EndReason.ALL_GATEWAYS_FAILED, "gwa: 503", status=500)
    r = r.with_cause(q850_for_status(500))
    assert (r.status, r.q850, r.end_reason) == (500, 41, EndReason.ALL_GATEWAYS_FAILED)
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
        (65, "bearer capability not implemented"),
        (66, "service or option not implemented, unspecified"),
        (99, "protocol error, unspecified"),
        (120, "interworking, unspecified"),
    ],
)
def test_cause_text(cause: int, text: str) -> None:
    assert cause_text(cause) == text


def test_refusal_carries_code_reason_header_and_detail() -> None:
    r = refuse(EndReason.ALL_GATEWAYS_FAILED, "gwa: 503, gwb: timeout")
    assert (r.status, r.end_reason, r.q850) == (503, EndReason.ALL_GATEWAYS_FAILED, 34)
    assert r.reason_header() == 'Q.850;cause=34;text="no circuit/channel available"'
    parsed = parse_reason(r.reason_header())
    assert (parsed.protocol, parsed.cause, parsed.text) == (
        "Q.850",
        34,
        "no circuit/channel available",
    )
    assert r.headers() == [("Reason", r.reason_header())]
    assert "gwa" not in r.reason_header()  # detail stays internal
    assert refuse(EndReason.BUSY, status=600).status == 600


def test_unknown_end_reason_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        refuse("bogus")


def test_old_spellings_map_to_the_documented_ones() -> None:
    assert refuse("shutting_down").end_reason is EndReason.SYSTEM_SHUTDOWN
    assert refuse("bad_request").end_reason is EndReason.INVALID_REQUEST


@pytest.mark.parametrize(
    ("status", "cause"), [(200, 16), (404, 1), (486, 17), (503, 41), (408, 102), (599, 31)]
)
def test_q850_for_status(status: int, cause: int) -> None:
    assert q850_for_status(status) == cause
