"""SDP: reading media sections and addresses, and the codec policy on direct-media offers.

Real-world offers first (SIPp's default, a Linphone-like one, audio plus video, LF-only),
then properties: a policy that allows everything offered changes nothing, stripping never
adds a line and keeps the preference order, and any bytes give a result or SdpError.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from softswitch.media.codecs import NON_VOICE, canonical_codec
from softswitch.media.sdp import (
    ALLOWS_NO_VOICE,
    MediaSection,
    SdpError,
    apply_codec_policy,
    common_codecs,
    media_addresses,
    media_sections,
    merge_policies,
)

# SIPp's built-in uac scenario, as sent with -mi 127.0.0.1 and the default media port.
SIPP = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

# A Linphone-like offer: opus first, AVPF feedback, two telephone-event clock rates and a
# video section that reuses payload type 96 for VP8.
LINPHONE = (
    b"v=0\r\n"
    b"o=alice 3617 1293 IN IP4 192.168.1.20\r\n"
    b"s=Talk\r\n"
    b"c=IN IP4 192.168.1.20\r\n"
    b"t=0 0\r\n"
    b"a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n"
    b"m=audio 7078 RTP/AVPF 96 0 8 101 97\r\n"
    b"a=rtpmap:96 opus/48000/2\r\n"
    b"a=fmtp:96 useinbandfec=1\r\n"
    b"a=rtpmap:101 telephone-event/48000\r\n"
    b"a=rtpmap:97 telephone-event/8000\r\n"
    b"a=rtcp:7079\r\n"
    b"a=rtcp-fb:96 nack\r\n"
    b"a=rtcp-fb:* trr-int 1000\r\n"
    b"a=rtcp-fb:* ccm tmmbr\r\n"
    b"m=video 9078 RTP/AVPF 96\r\n"
    b"a=rtpmap:96 VP8/90000\r\n"
    b"a=rtcp-fb:96 nack pli\r\n"
    b"a=rtcp-fb:* ccm fir\r\n"
)

LINPHONE_PCMA_PCMU = (
    b"v=0\r\n"
    b"o=alice 3617 1293 IN IP4 192.168.1.20\r\n"
    b"s=Talk\r\n"
    b"c=IN IP4 192.168.1.20\r\n"
    b"t=0 0\r\n"
    b"a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n"
    b"m=audio 7078 RTP/AVPF 8 0 101 97\r\n"
    b"a=rtpmap:101 telephone-event/48000\r\n"
    b"a=rtpmap:97 telephone-event/8000\r\n"
    b"a=rtcp:7079\r\n"
    b"a=rtcp-fb:* trr-int 1000\r\n"
    b"a=rtcp-fb:* ccm tmmbr\r\n"
    b"m=video 9078 RTP/AVPF 96\r\n"
    b"a=rtpmap:96 VP8/90000\r\n"
    b"a=rtcp-fb:96 nack pli\r\n"
    b"a=rtcp-fb:* ccm fir\r\n"
)

# A gateway-style offer with audio and video, each with its own media-level address.
AUDIO_VIDEO = (
    b"v=0\r\n"
    b"o=- 20518 0 IN IP4 203.0.113.1\r\n"
    b"s=-\r\n"
    b"t=0 0\r\n"
    b"m=audio 54400 RTP/AVP 0 8 18 13 101\r\n"
    b"c=IN IP4 203.0.113.1\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
    b"m=video 55400 RTP/AVP 34 96\r\n"
    b"c=IN IP4 203.0.113.2\r\n"
    b"a=rtpmap:96 H264/90000\r\n"
    b"a=fmtp:96 profile-level-id=42801F\r\n"
)

LF_ONLY = SIPP.replace(b"\r\n", b"\n")


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def test_sipp_default_offer() -> None:
    assert media_sections(SIPP) == [
        MediaSection(
            kind="audio",
            port=6000,
            proto="RTP/AVP",
            formats=("0",),
            codecs=("PCMU",),
            address="127.0.0.1",
        )
    ]
    assert media_addresses(SIPP) == [("127.0.0.1", 6000)]


def test_linphone_offer_reads_rtpmap_names_canonically() -> None:
    audio, video = media_sections(LINPHONE)
    assert (audio.kind, audio.port, audio.proto) == ("audio", 7078, "RTP/AVPF")
    assert audio.formats == ("96", "0", "8", "101", "97")
    assert audio.codecs == ("opus", "PCMU", "PCMA", "telephone-event", "telephone-event")
    assert video.formats == ("96",)
    assert video.codecs == ("VP8",)
    assert media_addresses(LINPHONE) == [("192.168.1.20", 7078), ("192.168.1.20", 9078)]


def test_media_level_connection_overrides_the_session_level_one() -> None:
    body = SIPP.replace(
        b"m=audio 6000 RTP/AVP 0\r\n", b"m=audio 6000 RTP/AVP 0\r\nc=IN IP4 10.0.0.9\r\n"
    )
    assert media_addresses(body) == [("10.0.0.9", 6000)]
    assert media_addresses(AUDIO_VIDEO) == [("203.0.113.1", 54400), ("203.0.113.2", 55400)]


def test_static_payload_types_without_rtpmap() -> None:
    audio, video = media_sections(AUDIO_VIDEO)
    assert audio.codecs == ("PCMU", "PCMA", "G729", "CN", "telephone-event")
    assert video.codecs == ("H263", "H264")


def test_lf_only_reads_as_crlf() -> None:
    assert media_sections(LF_ONLY) == media_sections(SIPP)
    mixed = SIPP.replace(b"s=-\r\n", b"s=-\n")
    assert media_sections(mixed) == media_sections(SIPP)


@pytest.mark.parametrize(
    ("connection", "address"),
    [
        (b"c=IN IP6 2001:db8::1\r\n", "2001:db8::1"),
        (b"c=IN IP4 224.2.1.1/127/3\r\n", "224.2.1.1"),
        (b"c=IN IP4 media.example.net\r\n", "media.example.net"),
        (b"c=IN  IP4\t192.0.2.7 \r\n", "192.0.2.7"),
    ],
)
def test_connection_addresses(connection: bytes, address: str) -> None:
    body = SIPP.replace(b"c=IN IP4 127.0.0.1\r\n", connection)
    assert media_addresses(body) == [(address, 6000)]


def test_rejected_streams_are_listed_with_port_zero() -> None:
    body = SIPP + b"m=video 0 RTP/AVP 31\r\n"
    assert media_addresses(body) == [("127.0.0.1", 6000), ("127.0.0.1", 0)]
    assert media_sections(SIPP + b"m=video 0 RTP/AVP\r\n")[1].formats == ()


def test_other_formats_and_unknown_payload_types() -> None:
    body = SIPP + b"m=image 4000 udptl t38\r\nm=audio 5000 RTP/AVP 120 5\r\n"
    t38, audio = media_sections(body)[1:]
    assert (t38.kind, t38.proto, t38.formats, t38.codecs) == ("image", "udptl", ("t38",), (None,))
    assert audio.codecs == (None, "DVI4")


def test_first_rtpmap_of_a_payload_type_wins_and_session_rtpmaps_are_ignored() -> None:
    body = (
        b"v=0\r\na=rtpmap:0 opus/48000\r\nc=IN IP4 192.0.2.1\r\n"
        b"m=audio 1 RTP/AVP 0 96\r\na=rtpmap:96 PCMA/8000\r\na=rtpmap:96 PCMU/8000\r\n"
    )
    assert media_sections(body)[0].codecs == ("PCMU", "PCMA")


def test_missing_connection_address() -> None:
    body = SIPP.replace(b"c=IN IP4 127.0.0.1\r\n", b"")
    assert media_sections(body)[0].address is None
    with pytest.raises(SdpError, match="no c= line"):
        media_addresses(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "v= line"),
        (b"hello", "v= line"),
        (b"INVITE sip:a@b SIP/2.0\r\n\r\n", "v= line"),
        (b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\nm=audio 1 RTP/AVP 0\r\n", "v= line"),
        (b"v=0\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n", "no m= line"),
        (b"v=0\r\nm=audio\r\n", "bad m= line"),
        (b"v=0\r\nm=audio RTP/AVP 0\r\n", "bad m= line"),
        (b"v=0\r\nm=audio x6000 RTP/AVP 0\r\n", "bad m= line"),
        (b"v=0\r\nm=audio 6000x RTP/AVP 0\r\n", "bad m= line"),
        (b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
        (b"v=0\r\nm=audio 123456 RTP/AVP 0\r\n", "bad m= line"),
        (b"v=0\r\nm=audio 6000 RTP/AVP\r\n", "no formats"),
        (b"v=0\r\nm= audio 6000 RTP/AVP 0\r\n", "bad m= line"),
        (b"v=0\r\nc=IN IP4\r\nm=audio 6000 RTP/AVP 0\r\n", "bad c= line"),
        (b"v=0\r\nm=audio 6000 RTP/AVP 0\r\nc=\r\n", "bad c= line"),
    ],
)
def test_not_sdp_raises_sdp_error_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        media_sections(body)
    with pytest.raises(SdpError, match=reason):
        apply_codec_policy(body, ["PCMA"])
    assert issubclass(SdpError, ValueError)


def test_leading_blank_lines_and_port_ranges_are_tolerated() -> None:
    assert media_sections(b"\r\n" + SIPP)[0].port == 6000
    assert media_sections(SIPP.replace(b"6000 ", b"6000/2 "))[0].port == 6000


# ---------------------------------------------------------------------------------------
# The codec policy
# ---------------------------------------------------------------------------------------


def test_no_policy_returns_the_same_object_without_parsing() -> None:
    assert apply_codec_policy(SIPP, []) is SIPP
    assert apply_codec_policy(SIPP, ()) is SIPP
    not_sdp = b"not sdp at all"
    assert apply_codec_policy(not_sdp, []) is not_sdp


@pytest.mark.parametrize(
    "allowed", [["PCMU"], ["g711u"], ["PCMA", "PCMU"], ["G729", "ulaw", "g711a"]]
)
def test_nothing_to_change_returns_the_same_object(allowed: list[str]) -> None:
    assert apply_codec_policy(SIPP, allowed) is SIPP
    assert apply_codec_policy(LF_ONLY, allowed) is LF_ONLY


def test_sipp_offer_with_no_codec_in_common_is_none() -> None:
    assert apply_codec_policy(SIPP, ["PCMA", "G729"]) is None
    assert apply_codec_policy(SIPP, ALLOWS_NO_VOICE) is None


def test_linphone_strips_opus_and_its_lines_in_the_audio_section_only() -> None:
    assert apply_codec_policy(LINPHONE, ["g711a", "g711u", "g729"]) == LINPHONE_PCMA_PCMU


def test_linphone_lf_only() -> None:
    lf = LINPHONE.replace(b"\r\n", b"\n")
    assert apply_codec_policy(lf, ["PCMA", "PCMU"]) == LINPHONE_PCMA_PCMU.replace(b"\r\n", b"\n")


def test_reordering_alone_keeps_every_line() -> None:
    result = apply_codec_policy(AUDIO_VIDEO, ["G729", "PCMA", "PCMU"])
    assert result == AUDIO_VIDEO.replace(
        b"m=audio 54400 RTP/AVP 0 8 18 13 101", b"m=audio 54400 RTP/AVP 18 8 0 13 101"
    )


def test_stripping_removes_rtpmap_and_fmtp_of_removed_types() -> None:
    result = apply_codec_policy(AUDIO_VIDEO, ["PCMA"])
    assert result == (
        b"v=0\r\n"
        b"o=- 20518 0 IN IP4 203.0.113.1\r\n"
        b"s=-\r\n"
        b"t=0 0\r\n"
        b"m=audio 54400 RTP/AVP 8 13 101\r\n"
        b"c=IN IP4 203.0.113.1\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-15\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
        b"m=video 55400 RTP/AVP 34 96\r\n"
        b"c=IN IP4 203.0.113.2\r\n"
        b"a=rtpmap:96 H264/90000\r\n"
        b"a=fmtp:96 profile-level-id=42801F\r\n"
    )


def test_non_voice_formats_move_after_the_voice_ones_in_offer_order() -> None:
    body = SIPP.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 101 13 8 0\r\n") + (
        b"a=rtpmap:101 telephone-event/8000\r\n"
    )
    result = apply_codec_policy(body, ["PCMU", "PCMA"])
    assert result == body.replace(b"RTP/AVP 101 13 8 0\r\n", b"RTP/AVP 0 8 101 13\r\n")


def test_two_formats_of_one_codec_keep_their_offer_order() -> None:
    body = SIPP.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 0 98 97\r\n") + (
        b"a=rtpmap:98 speex/16000\r\na=rtpmap:97 speex/8000\r\n"
    )
    result = apply_codec_policy(body, ["speex", "PCMU"])
    assert result == body.replace(b"RTP/AVP 0 98 97\r\n", b"RTP/AVP 98 97 0\r\n")


def test_only_non_voice_left_is_none() -> None:
    body = SIPP.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 0 101\r\n") + (
        b"a=rtpmap:101 telephone-event/8000\r\n"
    )
    assert apply_codec_policy(body, ["G729", "telephone-event"]) is None
    dtmf_only = SIPP.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 101\r\n")
    dtmf_only += b"a=rtpmap:101 telephone-event/8000\r\n"
    assert apply_codec_policy(dtmf_only, ["PCMU"]) is None


def test_rejected_audio_and_video_are_untouched() -> None:
    rejected = SIPP.replace(b"6000", b"0")
    assert apply_codec_policy(rejected, ["G729"]) is rejected
    body = SIPP + b"m=audio 0 RTP/AVP 18 0\r\nm=video 5002 RTP/AVP 31 34\r\n"
    assert apply_codec_policy(body, ["PCMU"]) is body


def test_every_live_audio_section_needs_a_voice_codec() -> None:
    body = SIPP + b"m=audio 6002 RTP/AVP 8\r\n"
    assert apply_codec_policy(body, ["PCMU"]) is None
    assert apply_codec_policy(body, ["PCMA"]) is None
    assert apply_codec_policy(body, ["PCMA", "PCMU"]) is body


def test_dynamic_types_without_rtpmap_and_unknown_codecs_are_stripped() -> None:
    body = SIPP.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 0 120 5 99\r\n") + (
        b"a=rtpmap:99 red/8000\r\na=fmtp:99 0/0\r\na=fmtp:120 mode=30\r\n"
    )
    assert apply_codec_policy(body, ["PCMU"]) == SIPP


def test_rtpmap_names_are_compared_canonically() -> None:
    body = SIPP.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 0 96\r\n") + b"a=rtpmap:96 g729a/8000\r\n"
    assert apply_codec_policy(body, ["G.729"]) == body.replace(
        b"RTP/AVP 0 96\r\n", b"RTP/AVP 96\r\n"
    ).replace(b"a=rtpmap:0 PCMU/8000\r\n", b"")


def test_rtcp_fb_star_and_other_sections_attributes_stay() -> None:
    result = apply_codec_policy(LINPHONE, ["PCMU"])
    assert result is not None
    assert b"a=rtcp-fb:* trr-int 1000\r\n" in result
    assert b"a=rtcp-fb:96 nack pli\r\n" in result
    assert b"a=rtcp-fb:96 nack\r\n" not in result
    assert b"a=rtpmap:96 VP8/90000\r\n" in result


def test_no_trailing_newline_is_kept() -> None:
    body = AUDIO_VIDEO.removesuffix(b"\r\n")
    result = apply_codec_policy(body, ["G729"])
    assert result is not None
    assert result.endswith(b"a=fmtp:96 profile-level-id=42801F")
    last_line_goes = SIPP.removesuffix(b"\r\n").replace(b"RTP/AVP 0", b"RTP/AVP 0 8")
    assert apply_codec_policy(last_line_goes, ["PCMA"]) == SIPP.replace(
        b"RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", b"RTP/AVP 8"
    )


def test_unknown_policy_names_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        apply_codec_policy(SIPP, ["g711", "PCMU"])


# ---------------------------------------------------------------------------------------
# Codecs in common, merged policies
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "allowed", "common"),
    [
        (SIPP, ["PCMA", "PCMU"], ["PCMU"]),
        (SIPP, ["PCMA"], []),
        (SIPP, [], ["PCMU"]),
        (LINPHONE, ["g729", "g711u", "opus", "g711a"], ["PCMU", "opus", "PCMA"]),
        (LINPHONE, [], ["opus", "PCMU", "PCMA"]),
        (LINPHONE, ["telephone-event"], []),
        (AUDIO_VIDEO, ["G729", "g729a", "PCMA"], ["G729", "PCMA"]),
        (SIPP.replace(b"6000", b"0"), ["PCMU"], []),
    ],
)
def test_common_codecs(body: bytes, allowed: list[str], common: list[str]) -> None:
    assert common_codecs(body, allowed) == common


@pytest.mark.parametrize(
    ("account", "gateway", "merged"),
    [
        ([], [], ()),
        (["g729", "g711a"], [], ("G729", "PCMA")),
        ([], ["pcmu", "PCMA"], ("PCMU", "PCMA")),
        (["G729", "PCMA"], ["PCMA", "PCMU", "G729"], ("PCMA", "G729")),
        (["PCMU", "PCMA", "G729"], ["G729", "PCMA"], ("G729", "PCMA")),
        (["g711u", "ulaw", "PCMU"], [], ("PCMU",)),
        (["PCMA", "telephone-event"], ["telephone-event", "PCMA"], ("PCMA",)),
        (["G729"], ["PCMA"], ALLOWS_NO_VOICE),
        (["telephone-event"], [], ALLOWS_NO_VOICE),
        ([], ["CN"], ALLOWS_NO_VOICE),
    ],
)
def test_merge_policies(account: list[str], gateway: list[str], merged: tuple[str, ...]) -> None:
    assert merge_policies(account, gateway) == merged


def test_a_merge_with_nothing_in_common_answers_488_not_no_policy() -> None:
    merged = merge_policies(["G729"], ["PCMA"])
    assert merged
    assert apply_codec_policy(SIPP, merged) is None
    assert common_codecs(SIPP, merged) == []


def test_merge_policies_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        merge_policies(["PCMA"], ["g7xx"])


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

# Codecs with a static payload type (RFC 3551) and their rtpmap text.
STATIC = {"PCMU": 0, "GSM": 3, "G723": 4, "PCMA": 8, "G722": 9, "CN": 13, "G729": 18}
RTPMAP = {
    "PCMU": "PCMU/8000",
    "GSM": "GSM/8000",
    "G723": "G723/8000",
    "PCMA": "PCMA/8000",
    "G722": "G722/8000",
    "CN": "CN/8000",
    "G729": "G729/8000",
    "opus": "opus/48000/2",
    "iLBC": "iLBC/8000",
    "speex": "speex/16000",
    "AMR": "AMR/8000",
    "AMR-WB": "AMR-WB/16000",
    "telephone-event": "telephone-event/8000",
}
VOICE = sorted(set(RTPMAP) - NON_VOICE)
SPELLINGS = {
    "PCMU": ["PCMU", "g711u", "ulaw", "G.711u"],
    "PCMA": ["PCMA", "g711a", "alaw"],
    "G729": ["G729", "g729a", "G.729"],
    "G723": ["G723", "g723", "G.723.1"],
}
# Not known to the codecs module: never allowed by any policy.
UNKNOWN_RTPMAP = ["red/8000", "L16/16000", "G726-32/8000", "G729D/8000"]
OTHER_ATTRIBUTES = ["a=ptime:20", "a=sendrecv", "a=rtcp-fb:* trr-int 1000", "a=rtcp:9"]


@dataclass(frozen=True)
class Offer:
    """A generated offer and what the generator knows about it: codecs per section."""

    body: bytes
    # (kind, port, [(payload type, canonical codec or None)]) per m= line.
    sections: list[tuple[str, int, list[tuple[str, str | None]]]]


@st.composite
def format_lines(draw: st.DrawFn, pt: str, rtpmap: str | None, may_omit_rtpmap: bool) -> list[str]:
    """The attribute lines of one payload type: rtpmap, maybe fmtp and rtcp-fb."""
    lines = []
    if rtpmap is not None and not (may_omit_rtpmap and draw(st.booleans())):
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
    if draw(st.booleans()):
        lines.append(f"a=fmtp:{pt} x={draw(st.integers(0, 9))}")
    if draw(st.booleans()):
        lines.append(f"a=rtcp-fb:{pt} nack")
    return lines


@st.composite
def audio_section(
    draw: st.DrawFn, codec_runs: list[tuple[str | None, int]], port: int
) -> tuple[list[str], list[tuple[str, str | None]]]:
    """An audio section listing each (codec, count) run in order, count formats each.

    The first format of a static codec uses its static number (rtpmap optional); the others
    take dynamic numbers. A None run is a dynamic type without rtpmap (codec None) or one
    whose rtpmap names a codec no policy knows (codec: that name).
    """
    dynamic = iter(draw(st.permutations(range(96, 128))))
    formats: list[tuple[str, str | None]] = []
    attributes: list[str] = []
    for codec, count in codec_runs:
        for n in range(count):
            if codec is None:
                pt = str(next(dynamic))
                unknown = draw(st.sampled_from([None, *UNKNOWN_RTPMAP]))
                attributes += draw(format_lines(pt, unknown, may_omit_rtpmap=False))
                formats.append((pt, None if unknown is None else unknown.split("/")[0]))
                continue
            elif codec in STATIC and n == 0:
                pt = str(STATIC[codec])
                attributes += draw(format_lines(pt, RTPMAP[codec], may_omit_rtpmap=True))
            else:
                pt = str(next(dynamic))
                attributes += draw(format_lines(pt, RTPMAP[codec], may_omit_rtpmap=False))
            formats.append((pt, codec))
    attributes += draw(st.lists(st.sampled_from(OTHER_ATTRIBUTES), max_size=3))
    if draw(st.booleans()):
        attributes.append(f"c=IN IP4 10.0.0.{draw(st.integers(1, 254))}")
    lines = [
        f"m=audio {port} RTP/AVP " + " ".join(pt for pt, _ in formats),
        *draw(st.permutations(attributes)),
    ]
    return lines, formats


VIDEO_SECTION = [
    "m=video 9078 RTP/AVP 96 34",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 nack pli",
    "a=fmtp:96 max-fr=30",
]


@st.composite
def offers(draw: st.DrawFn, voice_order: list[str] | None = None) -> Offer:
    """A whole offer with CRLF or LF endings, with or without a trailing newline.

    With ``voice_order``, every audio section lists voice codecs as a subsequence of it,
    each in one run, with non-voice formats last: the offer order matches ``voice_order``.
    """
    sections: list[tuple[str, int, list[tuple[str, str | None]]]] = []
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:
            lines += VIDEO_SECTION
            sections.append(("video", 9078, [("96", "VP8"), ("34", "H263")]))
            continue
        port = draw(st.sampled_from([0, 4000, 6000, 65534]))
        if voice_order is not None:
            chosen = draw(st.lists(st.sampled_from(voice_order), min_size=1, unique=True))
            voice = sorted(chosen, key=voice_order.index)
            non_voice = draw(st.lists(st.sampled_from(sorted(NON_VOICE)), unique=True))
            runs: list[tuple[str | None, int]] = [
                (codec, draw(st.integers(1, 2))) for codec in [*voice, *non_voice]
            ]
        else:
            codec_choices = st.sampled_from([*RTPMAP, None])
            runs = draw(st.lists(st.tuples(codec_choices, st.integers(1, 2)), min_size=1))
            runs = list({codec: (codec, count) for codec, count in runs}.values())
        section_lines, formats = draw(audio_section(runs, port))
        lines += section_lines
        sections.append(("audio", port, formats))
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    text = ending.join(lines) + (ending if draw(st.booleans()) else "")
    return Offer(text.encode("ascii"), sections)


@st.composite
def offers_and_their_order(draw: st.DrawFn) -> tuple[Offer, list[str]]:
    """An offer whose audio sections follow one voice order, and that order spelt freely."""
    order = draw(st.lists(st.sampled_from(VOICE), min_size=1, unique=True))
    spelt = [draw(st.sampled_from(SPELLINGS.get(codec, [codec]))) for codec in order]
    return draw(offers(order)), spelt


@given(offers_and_their_order())
def test_allowing_every_offered_codec_in_offer_order_changes_nothing(
    offer_and_order: tuple[Offer, list[str]],
) -> None:
    offer, allowed = offer_and_order
    assert apply_codec_policy(offer.body, allowed) is offer.body


def _lines(body: bytes) -> list[bytes]:
    """The lines of a body without their endings."""
    return body.splitlines()


@given(
    offers(),
    st.lists(st.sampled_from([*RTPMAP, "g711a", "g729a", "ulaw"]), min_size=1, max_size=6),
)
@example(Offer(LINPHONE, []), ["PCMU"])
def test_stripping_keeps_lines_and_the_preference_order(offer: Offer, allowed: list[str]) -> None:
    ranks: dict[str, int] = {}
    for name in allowed:
        codec = canonical_codec(name)
        if codec not in NON_VOICE:
            ranks.setdefault(codec, len(ranks))
    before = media_sections(offer.body)
    live_audio = [m.kind == "audio" and m.port != 0 for m in before]
    expected_none = any(
        live and not any(c in ranks for c in m.codecs)
        for live, m in zip(live_audio, before, strict=True)
    )
    if offer.sections:  # the generator's own account agrees with the parser's
        assert [list(zip(m.formats, m.codecs, strict=True)) for m in before] == [
            formats for _, _, formats in offer.sections
        ]

    result = apply_codec_policy(offer.body, allowed)

    if expected_none:
        assert result is None
        return
    assert result is not None
    # Never a new line: the non-m= lines are the input's, in order, with some left out,
    # and line endings and the trailing newline (or its absence) are the input's.
    old, new = _lines(offer.body), _lines(result)
    assert len(new) <= len(old)
    assert result.endswith(b"\n") == offer.body.endswith(b"\n")
    assert (b"\r\n" in result) == (b"\r\n" in offer.body)
    remaining = iter(line for line in old if not line.startswith(b"m="))
    assert all(line in remaining for line in new if not line.startswith(b"m="))
    # It re-parses, keeps every section, and each live audio one is a subset in order.
    after = media_sections(result)
    assert len(after) == len(before)
    for live, old_media, new_media in zip(live_audio, before, after, strict=True):
        if not live:
            assert new_media == old_media
            continue
        assert set(new_media.formats) <= set(old_media.formats)
        assert new_media.address == old_media.address
        voice = [c for c in new_media.codecs if c not in NON_VOICE]
        assert voice
        assert all(c is not None and c in ranks for c in voice)
        assert [ranks[c] for c in voice if c is not None] == sorted(
            ranks[c] for c in voice if c is not None
        )
        assert new_media.codecs[: len(voice)] == tuple(voice)  # non-voice last
        kept_non_voice = [
            f for f, c in zip(old_media.formats, old_media.codecs, strict=True) if c in NON_VOICE
        ]
        assert list(new_media.formats[len(voice) :]) == kept_non_voice
        by_preference = sorted(
            (ranks[c], i, f)
            for i, (f, c) in enumerate(zip(old_media.formats, old_media.codecs, strict=True))
            if c is not None and c in ranks
        )
        assert new_media.formats == tuple(f for _, _, f in by_preference) + tuple(kept_non_voice)
    # Applying the policy again changes nothing.
    assert apply_codec_policy(result, allowed) is result
    assert common_codecs(result, allowed) == common_codecs(offer.body, allowed)


def _mutations() -> st.SearchStrategy[bytes]:
    """SDP-shaped noise: real fragments, cut, repeated and glued with random bytes."""
    fragments = st.sampled_from(
        [
            *LINPHONE.splitlines(keepends=True),
            *AUDIO_VIDEO.replace(b"\r\n", b"\n").splitlines(keepends=True),
            b"v=0",
            b"m=",
            b"m=audio ",
            b"m=audio 99999999999999999999 RTP/AVP 0",
            b"m=audio 1 RTP/AVP " + b"9" * 5000,
            b"c=IN IP4",
            b"a=rtpmap:",
            b"a=rtpmap:96 ",
            b"\r",
            b"\n",
            b" ",
            b"\t",
            b"\xa0",
            b"\xb2",
            b"\x00",
        ]
    )
    return st.lists(st.one_of(fragments, st.binary(max_size=8)), max_size=30).map(b"".join)


@given(st.one_of(st.binary(), _mutations()))
@example(b"v=0\nm=audio 1 RTP/AVP \xb2")
@example(b"v=0\nm=audio \xb2 RTP/AVP 0")
def test_any_bytes_give_a_result_or_sdp_error(body: bytes) -> None:
    for call in (
        lambda: media_sections(body),
        lambda: media_addresses(body),
        lambda: apply_codec_policy(body, ["PCMA", "g729", "telephone-event"]),
        lambda: common_codecs(body, ["PCMU"]),
        lambda: common_codecs(body, []),
    ):
        with contextlib.suppress(SdpError):
            call()
