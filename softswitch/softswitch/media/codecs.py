"""Codec names: what operators write in a codec policy, and what SDP calls the same codec.

An operator coming from VOS3000 writes ``g711a``, ``g729a`` or ``g723``; an SDP offer says
``PCMA``, ``G729`` or ``G723`` in ``a=rtpmap`` (RFC 4566 section 6), or says nothing at
all for a static payload type (RFC 3551 section 6). The policy compares the two, so both
are brought to one spelling here: the media subtype name as registered, in its registered
case (``PCMU``, ``G729``, ``iLBC``, ``opus``, ``telephone-event``).

G.729 Annex A and Annex B are not separate codecs in SDP: Annex A is decoder-compatible
with plain G.729 and is offered as ``G729`` too, and Annex B (VAD and comfort noise) is
switched by ``a=fmtp:18 annexb=yes|no`` (RFC 4856 section 2.1.9; absent means yes). So
``g729``, ``g729a``, ``g729b`` and ``g729ab`` all name ``G729``; the policy never edits
fmtp lines of the formats it keeps, and whether Annex B is used stays between the two
endpoints. G.729D and G.729E have their own encoding names (``G729D``, ``G729E``) and are
not aliases of ``G729``.

``NON_VOICE`` formats (RFC 4733 telephone-event for DTMF, RFC 3389 comfort noise) carry
no voice: the policy keeps them when offered and never counts them as a codec in common.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "CODECS",
    "NON_VOICE",
    "STATIC_PAYLOAD_TYPES",
    "canonical_codec",
    "codec_key",
]

#: Canonical name -> the spellings accepted for it, each compared after ``_fold``
#: (case, spaces, ``.``, ``-``, ``_`` and ``/`` ignored; ``µ`` read as ``u``).
_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "PCMU": ("pcmu", "g711u", "g711ulaw", "g711mu", "g711mulaw", "ulaw", "mulaw"),
    "PCMA": ("pcma", "g711a", "g711alaw", "alaw"),
    "G729": ("g729", "g729a", "g729b", "g729ab"),
    "G723": ("g723", "g7231"),
    "G722": ("g722",),
    "GSM": ("gsm", "gsmfr"),
    "iLBC": ("ilbc",),
    "opus": ("opus",),
    "AMR": ("amr", "amrnb"),
    # G.722.2 is the ITU name of AMR-WB.
    "AMR-WB": ("amrwb", "g7222"),
    "speex": ("speex",),
    "telephone-event": ("telephoneevent", "dtmf", "rfc2833", "rfc4733"),
    "CN": ("cn", "comfortnoise"),
}

#: The canonical names, in the order error messages list them.
CODECS: Final[tuple[str, ...]] = tuple(_ALIASES)

#: Formats that carry no voice. The codec policy keeps them when offered (DTMF and comfort
#: noise must survive a policy that only names voice codecs) and never counts them as a
#: codec in common: an offer of only telephone-event and CN has no voice codec and is
#: answered 488.
NON_VOICE: Final[frozenset[str]] = frozenset({"telephone-event", "CN"})

_BY_FOLDED: Final[Mapping[str, str]] = MappingProxyType(
    {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
)

#: RFC 3551 section 6, tables 4 and 5: the static payload types, whose encoding an m= line
#: may leave without ``a=rtpmap``. Reserved and unassigned numbers are absent; 2 (G721 in
#: RFC 1890) was withdrawn. Dynamic types (96-127) always need an rtpmap.
STATIC_PAYLOAD_TYPES: Final[Mapping[int, str]] = MappingProxyType(
    {
        0: "PCMU",
        3: "GSM",
        4: "G723",
        5: "DVI4",
        6: "DVI4",
        7: "LPC",
        8: "PCMA",
        9: "G722",
        10: "L16",
        11: "L16",
        12: "QCELP",
        13: "CN",
        14: "MPA",
        15: "G728",
        16: "DVI4",
        17: "DVI4",
        18: "G729",
        25: "CelB",
        26: "JPEG",
        28: "nv",
        31: "H261",
        32: "MPV",
        33: "MP2T",
        34: "H263",
    }
)

_IGNORED: Final = str.maketrans({" ": None, ".": None, "-": None, "_": None, "/": None})


def _fold(name: str) -> str:
    """The spelling-insensitive form of a codec name: ``"G.711 µ-law"`` -> ``g711ulaw``."""
    return name.strip().replace("µ", "u").replace("μ", "u").lower().translate(_IGNORED)


def canonical_codec(name: str) -> str:
    """The SDP encoding name for a codec as an operator writes it in a codec policy.

    ``canonical_codec("g711a") == "PCMA"``, ``canonical_codec("G.723.1") == "G723"``,
    ``canonical_codec("g729ab") == "G729"`` (Annex B is an fmtp, see the module docstring).
    Canonical names map to themselves, in any case. Config loading calls this to name a
    bad value, so an unknown name raises ``ValueError`` whose message lists the known ones.
    """
    found = _BY_FOLDED.get(_fold(name))
    if found is None:
        known = ", ".join(CODECS)
        raise ValueError(
            f"unknown codec {name!r}: known codecs are {known} "
            "(aliases such as g711a, g711u, alaw, ulaw, g729a, g723.1 are accepted)"
        )
    return found


def codec_key(encoding: str) -> str:
    """The name to compare an SDP encoding name with: canonical when known, else as written.

    SDP carries codecs this module does not know (``H264``, ``red``, ``L16``); they keep
    their own name, never match a policy (whose names are all canonical), and never raise.
    """
    return _BY_FOLDED.get(_fold(encoding), encoding)
