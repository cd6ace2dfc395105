"""Live calls through the API: listed while they hunt and once answered, hung up either way
(the caller and the carrier see it in SIP, the CDR says ``operator_hangup``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from management_support import NUMBER, World, answer, request, run, status

from softswitch.sip import Request, Response


async def cdr(w: World, call_id: str) -> dict[str, object]:
    """The call's CDR through the API, once the writer has committed it."""
    w.switch.cdrs.flush(5.0)
    code, body = await w.get("/api/cdrs", params={"call_id": call_id})
    assert code == 200
    (row,) = body["cdrs"]
    return dict(row)


def test_a_ringing_call_is_listed_and_hung_up(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.invite(call_id="ring-1")
        sent = await w.gw1.expect(request("INVITE"))
        assert isinstance(sent, Request)
        w.gw1.send(answer(sent, "180 Ringing"), w.port)
        await w.caller.expect(status(180))
        code, listed = await w.get("/api/calls")
        assert code == 200
        (call,) = listed["calls"]
        assert {k: call[k] for k in ("id", "account", "gateway", "number", "state")} == {
            "id": "ring-1",
            "account": "acme",
            "gateway": "gw1",
            "number": NUMBER,
            "state": "hunting",
        }
        assert call["duration"] == 0.0
        assert call["elapsed"] >= 0.0
        code, one = await w.get("/api/calls/ring-1")
        assert (code, one["id"]) == (200, "ring-1")

        code, done = await w.delete("/api/calls/ring-1")
        assert (code, done["hung_up"], done["states"]) == (200, 1, ["hunting"])
        assert done["end_reason"] == "operator_hangup"
        await w.gw1.expect(request("CANCEL"))
        final = await w.caller.expect(lambda m: isinstance(m, Response) and m.status >= 300)
        assert isinstance(final, Response)
        assert final.status == 480  # never a 200 without a dialog
        row = await cdr(w, "ring-1")
        assert (row["end_reason"], row["status"]) == ("operator_hangup", 480)
        assert (await w.get("/api/calls"))[1] == {"calls": []}
        assert await w.delete("/api/calls/ring-1") == (
            404,
            {"error": "no call in progress with Call-ID 'ring-1'"},
        )

    run(tmp_path, body)


def test_an_answered_call_gets_a_bye_on_both_sides(tmp_path: Path) -> None:
    call_id = "up-1@host/x"  # a Call-ID with characters a path must escape

    async def body(w: World) -> None:
        w.invite(call_id=call_id)
        sent = await w.gw1.expect(request("INVITE"))
        assert isinstance(sent, Request)
        w.gw1.send(answer(sent, "200 OK"), w.port)
        ok = await w.caller.expect(status(200))
        assert isinstance(ok, Response)
        w.ack(ok, call_id)
        await w.gw1.expect(request("ACK"))
        code, listed = await w.get("/api/calls")
        (call,) = listed["calls"]
        assert (call["id"], call["state"], call["gateway"]) == (call_id, "answered", "gw1")
        assert call["answered_at"] is not None
        code, done = await w.delete(f"/api/calls/{quote(call_id, safe='')}")
        assert (code, done["states"]) == (200, ["answered"])
        for side in (w.caller, w.gw1):
            bye = await side.expect(request("BYE"))
            assert isinstance(bye, Request)
            assert 'text="normal call clearing"' in (bye.headers.get("Reason") or "")
        row = await cdr(w, call_id)
        assert (row["end_reason"], row["hangup_side"], row["status"]) == (
            "operator_hangup",
            "switch",
            200,
        )

    run(tmp_path, body)
