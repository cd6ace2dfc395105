"""What one call leg's media gets: relayed or direct, which codecs, how long RTP may stop.

Decided per branch (account and gateway together, ``media_policy``), carried on the engine's
``Target``, so the engine never looks at the configuration. ``DIRECT`` is the common case
(direct media, any codec): one shared object the engine tests by identity, so a switch
without media settings pays nothing for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from softswitch.config import Account, Gateway, media_timeout

from .sdp import merge_policies

__all__ = ["DIRECT", "MediaPolicy", "media_policy"]


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """One leg's media rules: ``relay`` through a media relay, the allowed ``codecs`` in
    order of preference (empty: any), ``timeout`` seconds of dead RTP that end a relayed
    call (0: never), and whether the relay ``transcode``s to the allowed codecs."""

    relay: bool = False
    codecs: tuple[str, ...] = ()
    timeout: float = 0.0
    #: The relay offers ``codecs`` whatever the caller offered, transcoding between them.
    transcode: bool = False


#: Direct media, any codec: today's behaviour, SDP passed through byte for byte.
DIRECT = MediaPolicy()


def media_policy(account: Account, gateway: Gateway) -> MediaPolicy:
    """The media rules of ``account``'s call through ``gateway``: relayed if either says
    ``relay``; codecs allowed by both, in the gateway's order; the shortest media timeout;
    transcoding when the gateway asks for it (its config requires relay and codecs)."""
    relay = account.media == "relay" or gateway.media == "relay"
    codecs = merge_policies(account.codecs, gateway.codecs)
    if not relay and not codecs:
        return DIRECT
    timeout = media_timeout(account, gateway) if relay else 0.0
    return MediaPolicy(relay, codecs, timeout, transcode=relay and gateway.transcode)
