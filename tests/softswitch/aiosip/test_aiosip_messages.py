"""aiosip's message and address objects: the shapes its programs read, and malformed input.

The contact cases are the ones aiosip's own test suite checked, written anew.
"""

from __future__ import annotations

import asyncio

import pytest
from aiosip_support import LOCAL, run
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from softswitch import aiosip, sip
from softswitch.sip import parse_message

INVITE = (
    b"INVITE sip:bob@example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-2\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.test>;tag=a1\r\n'
    b"To: <sip:bob@example.test>\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5062;transport=tcp>\r\n"
    b"Expires: 30\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n\r\nv=0\n"
)


def uri_fields(contact: aiosip.Contact) -> dict[str, object]:
    return dict(contact["uri"])


@pytest.mark.parametrize(
    ("text", "scheme", "user", "host", "port"),
    [
        ("<sip:ops@10.0.0.9:5070>", "sip", "ops", "10.0.0.9", 5070),
        ("<sip:gateway.example.net>", "sip", None, "gateway.example.net", None),
        ("<sips:carol@[2001:db8::1]:5061>", "sips", "carol", "[2001:db8::1]", 5061),
    ],
    ids=["user-ipv4-port", "host-only", "sips-ipv6"],
)
def test_a_bare_address_is_all_uri(
    text: str, scheme: str, user: str | None, host: str, port: int | None
) -> None:
    """No display name, no header parameters: every field but the URI's parts is empty,
    and the address writes back unchanged."""
    parsed = aiosip.Contact.from_header(text)
    assert str(parsed) == text
    assert (parsed["name"], dict(parsed["params"])) == (None, {})
    expected = dict.fromkeys(("password", "params", "headers"))
    expected.update(scheme=scheme, user=user, host=host, port=port)
    assert uri_fields(parsed) == expected


@pytest.mark.parametrize(
    ("text", "name", "params", "written"),
    [
        (
            "Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8",
            "Anonymous",
            {"tag": "hyh8"},
            '"Anonymous" <sip:c8oqz84zk7z@privacy.org>;tag=hyh8',
        ),
        ('"Bob" <sips:bob@biloxi.com> ;tag=a48s', "Bob", {"tag": "a48s"}, None),
        ("sip:+12125551212@phone2net.com;tag=887s", None, {"tag": "887s"}, None),
        ('"A \\"quoted\\" name" <sip:q@h>', 'A "quoted" name', {}, None),
    ],
)
def test_contact_names_and_header_parameters(
    text: str, name: str | None, params: dict[str, str], written: str | None
) -> None:
    header = aiosip.Contact.from_header(text)
    assert header["name"] == name
    assert dict(header["params"]) == params
    assert header["uri"]["params"] is None  # ;tag belongs to the header, not the URI
    again = aiosip.Contact.from_header(str(header))
    assert (again["name"], dict(again["params"])) == (name, params)
    if written is not None:
        assert str(header) == written


def test_contact_tags_ports_and_conversion() -> None:
    header = aiosip.Contact.from_header("<sip:pytest@[::1]:7000;transport=tcp;lr>")
    assert header["uri"]["host"] == "[::1]"
    assert dict(header["uri"]["params"]) == {"transport": "tcp", "lr": None}
    assert header.details == ("sip", "tcp", "[::1]", 7000)
    header.add_tag()
    tag = header["params"]["tag"]
    header.add_tag()
    assert header["params"]["tag"] == tag
    assert header.to_name_addr().tag == tag
    assert aiosip.Contact({"uri": "sips:x@example.test"}).port == 5061
    assert aiosip.Contact({"uri": "sip:x@example.test;transport=tcp"}).port == 5060


@pytest.mark.parametrize("text", ["", "<sip:unterminated", "sip:", '"open <sip:a@b>', "a b c"])
def test_malformed_contacts_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="Not valid contact address"):
        aiosip.Contact.from_header(text)


def test_a_received_message_reads_as_in_aiosip() -> None:
    message = aiosip.messages.adopt(parse_message(INVITE))
    assert isinstance(message, aiosip.Request)
    assert message.method == "INVITE"
    assert message.headers["expires"] == "30"  # case-insensitive
    assert message.headers["Via"] == [
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
        "SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-2",
    ]
    assert "Content-Type" in message.headers
    assert message.headers.get("X-Missing", "none") == "none"
    with pytest.raises(KeyError):
        message.headers["X-Missing"]
    assert message.payload == "v=0\n"
    assert message.from_details["name"] == "Alice"
    assert message.from_details["params"]["tag"] == "a1"
    assert message.to_details["uri"]["user"] == "bob"
    contact = message.contact_details
    assert contact is not None
    assert (contact["uri"]["port"], contact.transport) == (5062, "tcp")
    assert message.cseq is not None
    assert message.cseq.seq == 7
    message.headers["Expires"] = 60
    message.payload = "v=1\n"
    assert b"Expires: 60\r\n" in message.encode()
    assert str(message).endswith("Content-Length: 4\r\n\r\nv=1\n")


def test_a_response_has_status_code_status_message_and_method() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, sip.Request)
    response = aiosip.Response.for_request(request, 486)
    assert (response.status_code, response.status_message, response.method) == (
        486,
        "Busy Here",
        "INVITE",
    )
    response.status_code = 600
    assert bytes(response).startswith(b"SIP/2.0 600 Busy Here\r\n")


def test_garbage_over_websocket_is_refused_and_the_server_keeps_serving() -> None:
    async def body() -> None:
        app = aiosip.Application()

        @app.route("OPTIONS")
        async def options(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
            await request.reply(200)

        try:
            port = (await app.run(protocol=aiosip.WS, local_addr=(LOCAL, 0)))[1]
            url = f"ws://{LOCAL}:{port}"
            async with connect(url, subprotocols=[Subprotocol("sip")], proxy=None) as ws:
                await ws.send(b"\x00\xff not SIP at all\r\n\r\n")
                await ws.send(INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: seven INVITE"))
                refused = parse_message((await asyncio.wait_for(ws.recv(), 2)).encode())
                assert isinstance(refused, sip.Response)
                assert refused.status == 400
            with pytest.raises(InvalidStatus, match="400"):  # no sip subprotocol offered
                async with connect(url, proxy=None):
                    pass
            peer = await aiosip.Application().connect(url, protocol=aiosip.WS)
            try:
                assert (await peer.request("OPTIONS")).status == 200
            finally:
                await peer.app.close()
        finally:
            await app.close()

    run(body)
