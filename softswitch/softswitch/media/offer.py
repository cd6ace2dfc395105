"""The codec question routing asks of a caller's INVITE: can this gateway take its offer?

Asked before a gateway is claimed (``proxy.pipeline``), so a gateway whose codec policy
shares nothing with the offer is passed over like a full one, and a call that no gateway
can take is answered 488 ``codec_mismatch`` without ringing anyone.
"""

from __future__ import annotations

from collections.abc import Sequence

from softswitch.sip import Request

from .codecs import NON_VOICE
from .sdp import SdpError, apply_codec_policy, media_sections

__all__ = ["TRANSCODABLE", "offer_allowed", "offered_codecs"]

_SDP = "application/sdp"


#: The voice codecs Debian's rtpengine 10.5 decodes and encodes in userspace (its
#: ``--codecs`` list; AMR and AMR-WB decode only): what it can transcode from.
TRANSCODABLE = frozenset({"PCMA", "PCMU", "G722", "G723", "G729", "GSM", "speex", "opus"})


def offer_allowed(invite: Request, codecs: Sequence[str], *, transcode: bool = False) -> bool:
    """Whether ``invite``'s offer has a voice codec ``codecs`` allows (``transcode``: one
    the relay can transcode from). An INVITE without SDP (a late offer) is let through: its
    offer comes in the answer, from the callee. An SDP that cannot be read is not: no
    policy can be applied to it."""
    if not invite.body or invite.media_type != _SDP:
        return True
    try:
        if transcode:
            if all(codec in NON_VOICE for codec in codecs):
                return False  # the account and the gateway share no voice codec to offer
            return any(
                name in TRANSCODABLE
                for section in media_sections(invite.body)
                if section.kind == "audio" and section.port != 0
                for name in section.codecs
            )
        return apply_codec_policy(invite.body, codecs) is not None
    except SdpError:
        return False


def offered_codecs(invite: Request) -> str:
    """The offer's voice codecs, for the CDR's detail: ``offer: PCMU, G722``."""
    if not invite.body:
        return "no offer"
    try:
        sections = media_sections(invite.body)
    except SdpError as exc:
        return f"unreadable offer: {exc}"
    names = [
        name
        for section in sections
        if section.kind == "audio"
        for name in section.codecs
        if name is not None and name not in NON_VOICE
    ]
    return "offer: " + (", ".join(dict.fromkeys(names)) or "no voice codec")
