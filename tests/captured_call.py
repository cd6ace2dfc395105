"""One call through the switch, byte for byte: the datagrams it received (``*_IN``) and
sent (``*_OUT``), captured from a SIPp caller and carrier on loopback (the switch on
127.0.0.1:39585, the caller on :58614, the carrier on :38514). Shared by the benches of the
SIP layer (``benches/sip_call_messages.py``, ``benches/transaction_call.py``) and the tests
that hold fast paths and relays to what the switch really receives and sends."""

from __future__ import annotations

INVITE_IN = (
    b"INVITE sip:441234567@127.0.0.1:39585 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:1000@127.0.0.1:58614;transport=UDP>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   115\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=caller 1 1 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 47770 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

TRYING_OUT = (
    b"SIP/2.0 100 Trying\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

INVITE_OUT = (
    b"INVITE sip:441234567@127.0.0.1:38514 SIP/2.0\r\n"
    b"Record-Route: <sip:127.0.0.1:39585;lr>\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK66b90893025a01ac\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:1000@127.0.0.1:58614;transport=UDP>\r\n"
    b"Max-Forwards: 69\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   115\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=caller 1 1 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 47770 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

RINGING_IN = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK66b90893025a01ac, "
    b"SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Record-Route: <sip:127.0.0.1:39585;lr>\r\n"
    b"Contact: <sip:carrier@127.0.0.1:38514;transport=UDP>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

RINGING_OUT = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Record-Route: <sip:127.0.0.1:39585;lr>\r\n"
    b"Contact: <sip:carrier@127.0.0.1:38514;transport=UDP>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OK_IN = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK66b90893025a01ac, "
    b"SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Record-Route: <sip:127.0.0.1:39585;lr>\r\n"
    b"Contact: <sip:carrier@127.0.0.1:38514;transport=UDP>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   116\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=carrier 1 1 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40266 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

OK_OUT = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Record-Route: <sip:127.0.0.1:39585;lr>\r\n"
    b"Contact: <sip:carrier@127.0.0.1:38514;transport=UDP>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   116\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=carrier 1 1 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40266 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

ACK_IN = (
    b"ACK sip:carrier@127.0.0.1:38514;transport=UDP SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-5\r\n"
    b"Route: <sip:127.0.0.1:39585;lr>\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 ACK\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

ACK_OUT = (
    b"ACK sip:carrier@127.0.0.1:38514;transport=UDP SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK2a99950073eea033\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-5\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 ACK\r\n"
    b"Max-Forwards: 69\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

BYE_IN = (
    b"BYE sip:carrier@127.0.0.1:38514;transport=UDP SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-7\r\n"
    b"Route: <sip:127.0.0.1:39585;lr>\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

BYE_OUT = (
    b"BYE sip:carrier@127.0.0.1:38514;transport=UDP SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK20a570b4f37373a3\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-7\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Max-Forwards: 69\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

BYE_OK_IN = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK20a570b4f37373a3, "
    b"SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-7\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

BYE_OK_OUT = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-7\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>;tag=32550SIPpTag0148\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
