"""Dialogs (RFC 3261 12): creation for both roles, route sets, in-dialog requests, CSeq."""

from __future__ import annotations

import pytest

from softswitch.sip.dialog import Dialog, DialogError, DialogId, DialogState, Role
from softswitch.sip.fields import Via, parse_name_addr
from softswitch.sip.message import Request, Response
from softswitch.sip.parser import parse_message
from softswitch.sip.uri import parse_uri

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def invite(*record_route: str) -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    for rr in record_route:
        msg.headers.add("Record-Route", rr)
    return msg


def reply(
    req: Request,
    status: int,
    *,
    contact: str | None = "<sip:bob@192.0.2.4>",
    rr: tuple[str, ...] = (),
) -> Response:
    resp = Response.for_request(req, status, to_tag="a6c85cf")
    for value in rr:
        resp.headers.add("Record-Route", value)
    if contact is not None:
        resp.headers.add("Contact", contact)
    return resp


def state_of(dialog: Dialog) -> DialogState:
    """Read the state afresh (a plain attribute access would stay narrowed for mypy)."""
    return dialog.state


VIA = Via.new("UDP", "pc33.atlanta.example.com", branch="z9hG4bK-in-dialog")
RR = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")


def uac_dialog(rr: tuple[str, ...] = RR) -> tuple[Request, Dialog]:
    req = invite()
    return req, Dialog.as_uac(req, reply(req, 200, rr=rr))


# ---------------------------------------------------------------- creation


def test_uac_dialog_from_2xx() -> None:
    _, dialog = uac_dialog()
    assert dialog.role is Role.UAC
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("a84b4c76e66710", "1928301774", "a6c85cf")
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"
    assert dialog.local_seq == 314159
    assert dialog.remote_seq is None
    assert dialog.remote_uri.tag == "a6c85cf"
    assert dialog.local_uri.tag == "1928301774"


def test_uas_dialog_keeps_record_route_order() -> None:
    req = invite(*RR)
    ok = reply(req, 200)
    dialog = Dialog.as_uas(req, ok)
    assert dialog.role is Role.UAS
    assert dialog.id == DialogId("a84b4c76e66710", "a6c85cf", "1928301774")
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"
    assert (dialog.local_seq, dialog.remote_seq) == (None, 314159)
    assert DialogId.for_incoming_request(_bye_from_peer(dialog)) == dialog.id


def _bye_from_peer(uas: Dialog) -> Request:
    return Request.build(
        "BYE",
        "sip:bob@192.0.2.4",
        via=Via.new("UDP", "pc33.atlanta.example.com"),
        from_=uas.remote_uri,
        to=uas.local_uri,
        call_id=uas.id.call_id,
        cseq=314160,
    )


def test_early_dialog_from_1xx_with_tag_then_confirmed_by_2xx() -> None:
    req = invite()
    dialog = Dialog.as_uac(req, reply(req, 180, rr=RR[:1]))
    assert dialog.state is DialogState.EARLY
    dialog.on_response(req, reply(req, 200, rr=RR, contact="<sip:bob@192.0.2.99>"))
    assert state_of(dialog) is DialogState.CONFIRMED
    assert len(dialog.route_set) == 2  # recomputed from the 2xx (13.2.2.4)
    assert str(dialog.remote_target) == "sip:bob@192.0.2.99"


def test_early_dialog_ends_on_failure() -> None:
    req = invite()
    dialog = Dialog.as_uac(req, reply(req, 183))
    dialog.on_response(req, reply(req, 486))
    assert dialog.state is DialogState.TERMINATED


@pytest.mark.parametrize("status", [100, 300, 486])
def test_only_1xx_with_tag_and_2xx_create_dialogs(status: int) -> None:
    req = invite()
    with pytest.raises(DialogError):
        Dialog.as_uac(req, reply(req, status))


def test_1xx_without_to_tag_creates_no_dialog() -> None:
    req = invite()
    with pytest.raises(DialogError):
        Dialog.as_uac(req, Response.for_request(req, 180))


def test_uas_needs_contact() -> None:
    req = invite()
    req.headers.remove("Contact")
    with pytest.raises(DialogError):
        Dialog.as_uas(req, reply(req, 200))


def test_uac_without_contact_falls_back_to_request_uri() -> None:
    req = invite()
    dialog = Dialog.as_uac(req, reply(req, 183, contact=None))
    assert dialog.remote_target == req.uri


# ---------------------------------------------------------------- requests, 12.2.1.1


def test_loose_routing_bye() -> None:
    _, dialog = uac_dialog()
    bye = dialog.create_request("BYE", via=VIA)
    assert str(bye.uri) == "sip:bob@192.0.2.4"
    assert [str(r.uri) for r in bye.route] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert bye.cseq is not None
    assert (bye.cseq.seq, bye.cseq.method) == (314160, "BYE")
    assert bye.from_tag == "1928301774"
    assert bye.to_tag == "a6c85cf"
    assert bye.call_id == "a84b4c76e66710"
    assert bye.top_via is not None
    assert bye.top_via.branch == "z9hG4bK-in-dialog"
    assert bye.max_forwards == 70
    assert dialog.create_request("INFO", via=VIA).cseq.seq == 314161  # type: ignore[union-attr]


def test_strict_router_first_route_becomes_request_uri() -> None:
    _, dialog = uac_dialog(rr=("<sip:p1.example.com;lr>", "<sip:strict.example.com;method=INVITE>"))
    bye = dialog.create_request("BYE", via=VIA)
    assert str(bye.uri) == "sip:strict.example.com"
    assert [str(r.uri) for r in bye.route] == ["sip:p1.example.com;lr", "sip:bob@192.0.2.4"]


def test_no_route_set() -> None:
    _, dialog = uac_dialog(rr=())
    bye = dialog.create_request("BYE", via=VIA)
    assert str(bye.uri) == "sip:bob@192.0.2.4"
    assert bye.route == []


def test_ack_for_2xx_reuses_invite_cseq() -> None:
    req, dialog = uac_dialog()
    assert req.cseq is not None
    ack = dialog.create_request("ACK", via=VIA, cseq=req.cseq.seq)
    assert ack.cseq is not None
    assert (ack.cseq.seq, ack.cseq.method) == (314159, "ACK")
    assert dialog.local_seq == 314159
    with pytest.raises(DialogError):
        dialog.create_request("ACK", via=VIA)


def test_uas_first_request_starts_numbering() -> None:
    req = invite(*RR)
    dialog = Dialog.as_uas(req, reply(req, 200))
    bye = dialog.create_request("BYE", via=VIA, initial_cseq=100)
    assert bye.cseq is not None
    assert bye.cseq.seq == 100
    assert str(bye.uri) == "sip:alice@pc33.atlanta.example.com"
    assert bye.from_tag == "a6c85cf"
    assert bye.to_tag == "1928301774"


def test_terminated_dialog_refuses_requests() -> None:
    _, dialog = uac_dialog()
    dialog.terminate()
    with pytest.raises(DialogError):
        dialog.create_request("BYE", via=VIA)


def test_contact_and_body() -> None:
    _, dialog = uac_dialog()
    reinvite = dialog.create_request(
        "INVITE",
        via=VIA,
        contact=parse_name_addr("<sip:switch@192.0.2.1>"),
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    assert reinvite.body == b"v=0\r\n"
    assert reinvite.content_length == 5
    assert str(reinvite.contact[0].uri) == "sip:switch@192.0.2.1"
    round_trip = parse_message(bytes(reinvite))
    assert isinstance(round_trip, Request)
    assert round_trip.cseq == reinvite.cseq


# ---------------------------------------------------------------- remote CSeq, 12.2.2


def test_lower_cseq_rejected_with_500() -> None:
    req = invite(*RR)
    dialog = Dialog.as_uas(req, reply(req, 200))
    stale = _bye_from_peer(dialog)
    stale.headers.set("CSeq", "314158 BYE")
    rejection = dialog.on_request(stale)
    assert rejection is not None
    assert rejection.status == 500
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.on_request(_bye_from_peer(dialog)) is None
    assert dialog.remote_seq == 314160
    assert state_of(dialog) is DialogState.TERMINATED


def test_ack_with_equal_cseq_accepted_and_target_refresh() -> None:
    req = invite()
    dialog = Dialog.as_uas(req, reply(req, 200))
    ack = _bye_from_peer(dialog)
    ack.method = "ACK"
    ack.headers.set("CSeq", "314159 ACK")
    assert dialog.on_request(ack) is None
    reinvite = _bye_from_peer(dialog)
    reinvite.method = "INVITE"
    reinvite.headers.set("CSeq", "314170 INVITE")
    reinvite.headers.add("Contact", "<sip:alice@198.51.100.50>")
    assert dialog.on_request(reinvite) is None
    assert dialog.remote_target == parse_uri("sip:alice@198.51.100.50")
    assert dialog.remote_seq == 314170


def test_first_request_sets_empty_remote_seq() -> None:
    _, dialog = uac_dialog()
    assert dialog.remote_seq is None
    bye = Request.build(
        "BYE",
        "sip:alice@pc33.atlanta.example.com",
        via=Via.new("UDP", "192.0.2.4"),
        from_=dialog.remote_uri,
        to=dialog.local_uri,
        call_id=dialog.id.call_id,
        cseq=5,
    )
    assert DialogId.for_incoming_request(bye) == dialog.id
    assert dialog.on_request(bye) is None
    assert dialog.remote_seq == 5


def test_response_dialog_id() -> None:
    req, dialog = uac_dialog()
    assert DialogId.for_incoming_response(reply(req, 200)) == dialog.id
    assert DialogId.for_incoming_response(Response.for_request(req, 100)) is None


def test_2xx_to_refresh_updates_target_and_481_terminates() -> None:
    _, dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", via=VIA)
    dialog.on_response(reinvite, reply(reinvite, 200, contact="<sip:bob@203.0.113.8>"))
    assert str(dialog.remote_target) == "sip:bob@203.0.113.8"
    info = dialog.create_request("INFO", via=VIA)
    dialog.on_response(info, reply(info, 481))
    assert dialog.state is DialogState.TERMINATED
