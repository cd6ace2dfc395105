"""The limits stage: enabled, deny/allow prefixes, max_calls and max_cps, with SIP codes."""

from __future__ import annotations

from softswitch.call.limits import check_destination, check_limits
from softswitch.call.live import LiveState
from softswitch.call.refusal import EndReason
from softswitch.call.snapshot import Snapshot


def test_disabled_account_is_403(snapshot: Snapshot) -> None:
    r = check_limits(snapshot.accounts["off"], "44123", LiveState(), 0.0)
    assert r is not None
    assert (r.status, r.end_reason, r.q850) == (403, EndReason.ACCOUNT_DISABLED, 21)


def test_deny_and_allow_prefixes(snapshot: Snapshot) -> None:
    ipcust = snapshot.accounts["ipcust"]
    r = check_destination(ipcust, "4490123")
    assert r is not None
    assert (r.status, r.end_reason) == (403, EndReason.FORBIDDEN_DESTINATION)
    assert check_destination(ipcust, "4491123") is None
    digest = snapshot.accounts["digest"]  # allow = ["44"]
    assert check_destination(digest, "44123") is None
    r = check_destination(digest, "1555")
    assert r is not None
    assert r.end_reason == EndReason.FORBIDDEN_DESTINATION


def test_max_calls_is_503_and_counting_happens_only_on_success(snapshot: Snapshot) -> None:
    live = LiveState()
    ipcust = snapshot.accounts["ipcust"]  # max_calls = 2
    assert check_limits(ipcust, "4490", live, 0.0) is not None  # denied: not counted
    assert check_limits(ipcust, "44123", live, 0.0) is None
    assert check_limits(ipcust, "44123", live, 0.1) is None
    r = check_limits(ipcust, "44123", live, 0.2)
    assert r is not None
    assert (r.status, r.end_reason, r.q850) == (503, EndReason.LIMIT_EXCEEDED, 34)
    assert "max_calls" in r.detail
    assert live.account_calls("ipcust") == 2
    live.account_release("ipcust")
    assert check_limits(ipcust, "44123", live, 0.3) is None


def test_max_cps(snapshot: Snapshot) -> None:
    live = LiveState()
    ipcust = snapshot.accounts["ipcust"]  # max_cps = 10
    for i in range(10):
        assert check_limits(ipcust, "44123", live, i / 100) is None
        live.account_release("ipcust")
    r = check_limits(ipcust, "44123", live, 0.5)
    assert r is not None
    assert "max_cps" in r.detail
    assert check_limits(ipcust, "44123", live, 1.0) is None
