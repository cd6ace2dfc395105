"""Gateways, accounts, blocks, balances, route explanation, CDRs, statistics and reload
through the API, each against a running switch and checked by what the switch then does."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import pytest
from management_support import NUMBER, World, answer, request, run, status

from softswitch.commands import parse_time, show_route
from softswitch.proxy import server as server_module
from softswitch.sip import Request, Response

LASTS = "until enabled again or the switch restarts (a SIGHUP reload keeps it)"


async def answered_and_hung_up(w: World, gateway_port: int, call_id: str) -> None:
    """Let the carrier answer, the caller ACK, then the caller hang up: one good CDR."""
    carrier = w.gw1 if gateway_port == w.gw1.port else w.gw2
    sent = await carrier.expect(request("INVITE"))
    assert isinstance(sent, Request)
    carrier.send(answer(sent, "200 OK"), w.port)
    ok = await w.caller.expect(status(200))
    assert isinstance(ok, Response)
    w.ack(ok, call_id)
    await carrier.expect(request("ACK"))
    code, _ = await w.delete(f"/api/calls/{call_id}")
    assert code == 200
    await carrier.expect(request("BYE"))
    await w.caller.expect(request("BYE"))


def test_a_gateway_disabled_at_run_time_is_skipped_until_enabled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(w: World) -> None:
        code, gw = await w.get("/api/gateways/gw1")
        assert code == 200
        assert (gw["enabled"], gw["health"], gw["calls"]) == (True, "not probed", 0)
        code, done = await w.post("/api/gateways/gw1/disable")
        assert (code, done) == (
            200,
            {
                "id": "gw1",
                "enabled": False,
                "disabled_by_operator": True,
                "changed": True,
                "lasts": LASTS,
            },
        )
        # the next call goes to gw2, and the routing explanation says why not gw1
        w.invite(call_id="c1")
        await answered_and_hung_up(w, w.gw2.port, "c1")
        code, route = await w.get("/api/route", params={"account": "acme", "number": NUMBER})
        assert [g["gateway"] for g in route["gateways"]] == ["gw2"]
        assert {"gateway": "gw1", "reason": "disabled (operator)"} in route["excluded"]
        # a reload keeps the override
        code, reloaded = await w.post("/api/reload")
        assert (code, reloaded["disabled_by_operator"]["gateways"]) == (200, ["gw1"])
        assert (await w.get("/api/gateways/gw1"))[1]["disabled_by_operator"] is True
        # enabled again: gw1 takes the next call
        code, done = await w.post("/api/gateways/gw1/enable")
        assert (code, done["enabled"], done["changed"]) == (200, True, True)
        assert (await w.post("/api/gateways/gw1/enable"))[1]["changed"] is False
        w.invite(call_id="c2")
        await answered_and_hung_up(w, w.gw1.port, "c2")
        # what the file disables stays disabled; an unknown id is 404
        code, refused = await w.post("/api/gateways/gw3/enable")
        assert code == 409
        assert "disabled in the configuration file" in refused["error"]
        assert (await w.post("/api/gateways/nope/disable"))[0] == 404
        code, listed = await w.get("/api/gateways")
        assert [(g["id"], g["enabled"]) for g in listed["gateways"]] == [
            ("gw1", True),
            ("gw2", True),
            ("gw3", False),
        ]

    with caplog.at_level(logging.WARNING, logger="softswitch.management"):
        run(tmp_path, body)
    (line,) = [m for m in caplog.messages if "gateway gw1 disabled" in m]
    assert line.endswith(f"lasts {LASTS}")


def test_an_account_disabled_at_run_time_is_refused_403(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        code, done = await w.post("/api/accounts/acme/disable")
        assert (code, done["enabled"], done["lasts"]) == (200, False, LASTS)
        w.invite(call_id="d1")
        refused = await w.caller.expect(lambda m: isinstance(m, Response) and m.status >= 300)
        assert isinstance(refused, Response)
        assert refused.status == 403
        w.switch.cdrs.flush(5.0)
        (row,) = (await w.get("/api/cdrs", params={"call_id": "d1"}))[1]["cdrs"]
        assert (row["end_reason"], row["detail"]) == (
            "account_disabled",
            "account acme is disabled by an operator",
        )
        code, route = await w.get("/api/route", params={"account": "acme", "number": NUMBER})
        assert route["refusal"]["end_reason"] == "account_disabled"
        assert (await w.post("/api/accounts/acme/enable"))[1]["enabled"] is True
        w.invite(call_id="d2")
        await answered_and_hung_up(w, w.gw1.port, "d2")
        code, account = await w.get("/api/accounts/acme")
        assert (account["enabled"], account["auth"], account["calls"]) == (True, "ip", 0)
        assert (await w.post("/api/accounts/dormant/enable"))[0] == 409
        assert (await w.get("/api/accounts/dormant"))[1]["auth"] == "digest"

    run(tmp_path, body)


def test_blocked_addresses_are_listed_and_unblocked(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        live = w.switch.live
        for _ in range(5):  # [defaults] auth_fail_limit: blocked for auth_block_time (300 s)
            live.note_auth_failure("10.9.9.9", time.monotonic())
        code, listed = await w.get("/api/blocks")
        (block,) = listed["blocks"]
        assert block["ip"] == "10.9.9.9"
        assert 0 < block["seconds_left"] <= 300
        assert await w.delete("/api/blocks/10.9.9.9") == (
            200,
            {"ip": "10.9.9.9", "unblocked": True},
        )
        assert (await w.get("/api/blocks"))[1] == {"blocks": []}
        assert (await w.delete("/api/blocks/10.9.9.9"))[0] == 404
        code, bad = await w.delete("/api/blocks/not-an-ip")
        assert (code, bad) == (400, {"error": "'not-an-ip' is not an IP address"})

    run(tmp_path, body)


def test_a_top_up_lets_a_prepaid_call_in(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.invite(number="7777" + NUMBER, call_id="p1")
        await w.caller.expect(status(402))
        code, balance = await w.get("/api/accounts/prepaid/balance")
        assert code == 200
        assert balance["live"] == {
            "balance": "0.000000",
            "credit_limit": "0.000000",
            "reserved": "0.000000",
            "available": "0.000000",
        }
        code, booked = await w.post(
            "/api/accounts/prepaid/topup", json={"amount": "5", "note": "api"}
        )
        assert code == 200
        entry = booked["entry"]
        assert (entry["kind"], entry["amount"], entry["balance_after"], entry["reference"]) == (
            "topup",
            "5.000000",
            "5.000000",
            "api",
        )
        w.invite(number="7777" + NUMBER, call_id="p2")
        await answered_and_hung_up(w, w.gw1.port, "p2")
        w.switch.cdrs.flush(5.0)
        code, balance = await w.get("/api/accounts/prepaid/balance")
        assert balance["ledger"]["balance"] == "4.900000"  # 60 s first increment at 0.10/min
        # money is never a float; a bad amount, an unbilled account, an unknown field
        code, refused = await w.post("/api/accounts/prepaid/topup", json={"amount": 5.5})
        assert code == 400
        assert "never a float" in refused["error"]
        assert (await w.post("/api/accounts/prepaid/topup", json={"amount": "-1"}))[0] == 400
        assert (await w.post("/api/accounts/prepaid/topup", json={"amount": "1", "x": 1}))[0] == 400
        assert (await w.post("/api/accounts/prepaid/topup", data="{"))[0] == 400
        code, refused = await w.get("/api/accounts/acme/balance")
        assert code == 409
        assert refused["error"] == "account 'acme' is not billed (billing = \"none\")"
        assert (await w.get("/api/accounts/nobody/balance"))[0] == 404

    run(tmp_path, body)


def test_the_route_explanation_is_softswitch_route(tmp_path: Path) -> None:
    at = "2026-12-04T10:00:00+00:00"

    async def body(w: World) -> None:
        for number in (NUMBER, "33123", "abc"):
            code, route = await w.get(
                "/api/route", params={"account": "acme", "number": number, "at": at}
            )
            assert code == 200
            out = io.StringIO()
            exit_status = show_route(
                str(w.config), "acme", number, at=parse_time(at), out=out, err=io.StringIO()
            )
            assert route["text"] == out.getvalue()
            assert route["routed"] is (exit_status == 0)
        code, route = await w.get("/api/route", params={"account": "acme", "number": NUMBER})
        assert [g["gateway"] for g in route["gateways"]] == ["gw1", "gw2"]
        assert route["excluded"] == [{"gateway": "gw3", "reason": "disabled"}]
        assert route["sell_rate"] == "0.100000"
        assert (await w.get("/api/route", params={"account": "acme"}))[1] == {
            "error": "query parameter 'number' is required"
        }
        assert (await w.get("/api/route", params={"account": "x", "number": "1"}))[0] == 404
        code, bad = await w.get("/api/route", params={"acount": "acme", "number": "1"})
        assert code == 400
        assert bad["error"].startswith("unknown query parameter 'acount' (did you mean 'account'?)")

    run(tmp_path, body)


def test_cdrs_are_searched_and_exported(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        for call_id in ("e1", "e2"):
            w.invite(call_id=call_id)
            await answered_and_hung_up(w, w.gw1.port, call_id)
        w.invite(number="7777" + NUMBER, call_id="e3")  # prepaid without credit: 402
        await w.caller.expect(status(402))
        w.switch.cdrs.flush(5.0)
        code, found = await w.get("/api/cdrs", params={"account": "acme"})
        assert (code, [r["call_id"] for r in found["cdrs"]]) == (200, ["e1", "e2"])
        assert found["cdrs"][0]["attempts"][0]["gateway_id"] == "gw1"
        code, found = await w.get("/api/cdrs", params={"limit": "1"})
        assert [r["call_id"] for r in found["cdrs"]] == ["e1"]
        code, _, text = await w.text("/api/cdrs.csv")
        assert code == 200
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [(r["call_id"], r["end_reason"]) for r in rows] == [
            ("e1", "operator_hangup"),
            ("e2", "operator_hangup"),
            ("e3", "insufficient_balance"),
        ]
        code, _, text = await w.text("/api/cdrs.csv", params={"account": "prepaid"})
        assert len(list(csv.DictReader(io.StringIO(text)))) == 1
        future = "2999-01-01"
        assert (await w.get("/api/cdrs", params={"since": future}))[1]["cdrs"] == []
        for params in (
            {"since": "yesterday"},
            {"limit": "0"},
            {"limit": "many"},
            {"since": "2026-01-02", "until": "2026-01-01"},
        ):
            code, bad = await w.get("/api/cdrs", params=params)
            assert code == 400, params
            assert set(bad) == {"error"}

    run(tmp_path, body)


def test_statistics_and_metrics(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.invite(call_id="s1")
        await answered_and_hung_up(w, w.gw1.port, "s1")
        w.switch.cdrs.flush(5.0)
        code, stats = await w.get("/api/stats/switch", params={"window": "5m"})
        assert (code, stats["dimension"], stats["window"]) == (200, "switch", "5m")
        assert stats["series"]["all"]["attempts"] == 1
        code, one = await w.get("/api/stats/gateway/gw1")
        assert (code, one["key"], one["window"]) == (200, "gw1", "5m")
        assert (await w.get("/api/stats/galaxy"))[0] == 400
        assert (await w.get("/api/stats/switch", params={"window": "7d"}))[0] == 400
        code, content_type, text = await w.text("/metrics")
        assert (code, content_type) == (200, "text/plain")
        assert 'softswitch_calls_total{account="acme",outcome="operator_hangup"} 1.0' in text

    run(tmp_path, body)


def test_a_reload_of_a_broken_file_is_refused_with_its_problems(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        good = w.config.read_text()
        w.config.write_text(good.replace('strategy = "priority"', 'strategy = "cheapest"'))
        code, refused = await w.post("/api/reload")
        assert code == 409
        assert refused["error"] == "reload refused: the running configuration is kept"
        (problem,) = refused["problems"]
        assert "routes[0].strategy" in problem
        w.config.write_text(good)
        assert (await w.post("/api/reload"))[0] == 200

    run(tmp_path, body)


def test_a_reload_that_fails_on_a_bug_answers_500_and_the_next_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a refused file but a bug in the reload: 500 with the API's error body (the
    connection was dropped while the reload's error was handed on as a cancellation,
    helper-87), and the next reload is not held up by it."""
    original = server_module._load
    calls: list[int] = []

    def fails_once(where: Path) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the reload")
        return original(where)

    monkeypatch.setattr(server_module, "_load", fails_once)

    async def body(w: World) -> None:
        code, failed = await w.post("/api/reload")
        assert code == 500
        assert failed["error"].startswith("internal error")
        assert (await w.post("/api/reload"))[0] == 200

    run(tmp_path, body)
