"""SDP read and codec policy: pure functions over the body bytes, no I/O.

The switch reads SDP for two reasons: to see which media addresses each side is given
(topology hiding must show only the relay's), and, when media goes direct rather than
through a relay, to apply the codec policy to the offer itself: strip the codecs the
account or gateway does not allow and order the rest by preference (RFC 3264 section 5.1:
the offerer lists formats in its order of preference).

An SDP body (RFC 4566) is lines of ``<type>=<value>``: the session part up to the first
``m=`` line, then one media section per ``m=`` line. Lines end in CRLF, but LF alone is
tolerated, as RFC 4566 section 5 asks. Editing is done on lines and everything not edited
is kept byte for byte (line endings, unknown lines, attribute order, the trailing newline),
because a peer may sign, hash or simply be picky about the body it wrote. Bytes are read
as Latin-1, which maps each byte to one character, so reading never fails and a rewritten
line encodes back to exactly the bytes it came from.

A body that is not SDP raises ``SdpError`` (a ``ValueError``) whose reason fits a 400 or
a log line; nothing else is raised for any input bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from softswitch.media.codecs import NON_VOICE, STATIC_PAYLOAD_TYPES, canonical_codec, codec_key

__all__ = [
    "ALLOWS_NO_VOICE",
    "MediaSection",
    "SdpError",
    "apply_codec_policy",
    "common_codecs",
    "media_addresses",
    "media_sections",
    "merge_policies",
]

#: The merged policy of two lists that share no voice codec. It must not be empty, which
#: means "no policy": it names only non-voice formats, so it allows no voice codec and
#: ``apply_codec_policy`` returns None (488) for every offer with live audio.
ALLOWS_NO_VOICE: Final[tuple[str, ...]] = tuple(sorted(NON_VOICE))

# Patterns read one line's value (no LF), a peer's text: ``_BLANKS`` splits on a single
# character class, the others are applied anchored (``match``) and where two repeats meet
# they accept disjoint characters, so each runs in time linear in the line.
_BLANKS: Final = re.compile(r"[ \t]+")
# m=<media> <port>[/<number of ports>] <proto> <fmt> ...  (RFC 4566 section 5.14)
# A port has at most five digits, so a peer's long digit run never reaches ``int``.
_M_HEAD: Final = re.compile(r"([^ \t]+)[ \t]+([0-9]{1,5})(?:/([0-9]{1,5}))?[ \t]+([^ \t]+)")
# a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
_RTPMAP: Final = re.compile(r"rtpmap:([^ \t]+)[ \t]+([^/ \t]+)", re.IGNORECASE)
# Attributes that belong to one payload type and go when it goes (RFC 4566 section 6,
# RFC 4585 section 4.2).  ``a=rtcp-fb:*`` applies to every format and stays.
_PER_FORMAT: Final = re.compile(r"(?:rtpmap|fmtp|rtcp-fb):([^ \t]+)", re.IGNORECASE)


class SdpError(ValueError):
    """The body is not SDP this module can read; ``str()`` says why, fit for a 400."""


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One ``m=`` line and what its section says about it.

    ``formats`` are the payload types as written (strings: non-RTP protocols use other
    tokens). ``codecs`` runs parallel to ``formats``: the codec of each, from its
    ``a=rtpmap`` or else the RFC 3551 static table, canonical when the ``codecs`` module
    knows it (``codec_key``), None for a dynamic type without rtpmap or a non-RTP format.
    ``address`` is the media-level ``c=`` address, else the session-level one, without a
    multicast ``/ttl`` suffix; None when neither exists.
    """

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    codecs: tuple[str | None, ...]
    address: str | None


@dataclass(frozen=True, slots=True)
class _Line:
    """One line of the body: its text (Latin-1, no line ending) and its exact ending."""

    text: str
    ending: bytes

    def to_bytes(self) -> bytes:
        """The exact bytes the line came from (Latin-1 maps characters back to bytes)."""
        return self.text.encode("latin-1") + self.ending


@dataclass(frozen=True, slots=True)
class _Section:
    """A parsed media section and where its lines are: ``start`` is the m= line's index."""

    media: MediaSection
    head: str  # the m= line up to the end of <proto>, kept exactly when rewriting
    start: int
    end: int


def _split_lines(body: bytes) -> list[_Line]:
    """Lines split at LF, each remembering whether it ended in CRLF, LF or nothing."""
    lines: list[_Line] = []
    pieces = body.split(b"\n")
    for number, piece in enumerate(pieces):
        last = number == len(pieces) - 1
        if last and not piece:
            break
        if last:
            lines.append(_Line(piece.decode("latin-1"), b""))
        elif piece.endswith(b"\r"):
            lines.append(_Line(piece[:-1].decode("latin-1"), b"\r\n"))
        else:
            lines.append(_Line(piece.decode("latin-1"), b"\n"))
    return lines


def _connection_address(value: str, number: int) -> str:
    """The address of ``c=<nettype> <addrtype> <connection-address>`` (section 5.7)."""
    fields = _BLANKS.split(value.strip(" \t"))
    if len(fields) < 3 or not fields[2]:
        raise SdpError(f"bad c= line (line {number}): expected '<nettype> <addrtype> <address>'")
    return fields[2].split("/", 1)[0]


def _parse(body: bytes) -> tuple[list[_Line], list[_Section]]:
    """Lines and media sections of an SDP body, or SdpError saying why it is not SDP."""
    lines = _split_lines(body)
    texts = [line.text for line in lines if line.text]
    if not texts or not texts[0].startswith("v="):
        raise SdpError("not SDP: the body does not start with a v= line")
    starts = [i for i, line in enumerate(lines) if line.text.startswith("m=")]
    if not starts:
        raise SdpError("not SDP: no m= line")
    session_address: str | None = None
    for i in range(starts[0]):
        if lines[i].text.startswith("c=") and session_address is None:
            session_address = _connection_address(lines[i].text[2:], i + 1)
    bounds = [*starts, len(lines)]
    sections = [
        _parse_section(lines, start, end, session_address) for start, end in pairwise(bounds)
    ]
    return lines, sections


def _parse_section(
    lines: Sequence[_Line], start: int, end: int, session_address: str | None
) -> _Section:
    """One media section: its m= line, then its c= and rtpmap lines up to ``end``."""
    value = lines[start].text[2:]
    head = _M_HEAD.match(value)
    if head is None:
        raise SdpError(
            f"bad m= line (line {start + 1}): expected '<media> <port> <proto> <fmt> ...'"
        )
    kind, port_text, _, proto = head.groups()
    port = int(port_text)
    rest = value[head.end() :]
    formats = tuple(_BLANKS.split(rest.strip(" \t"))) if rest.strip(" \t") else ()
    if port > 65535:
        raise SdpError(f"bad m= line (line {start + 1}): port {port} out of range")
    if not formats and port != 0:
        raise SdpError(f"bad m= line (line {start + 1}): no formats")
    media_address: str | None = None
    rtpmap: dict[str, str] = {}
    for i in range(start + 1, end):
        text = lines[i].text
        if text.startswith("c=") and media_address is None:
            media_address = _connection_address(text[2:], i + 1)
        elif text.startswith("a="):
            mapped = _RTPMAP.match(text, 2)
            if mapped is not None:
                rtpmap.setdefault(mapped.group(1), mapped.group(2))
    codecs = tuple(_codec_of(fmt, rtpmap) for fmt in formats)
    media = MediaSection(
        kind=kind,
        port=port,
        proto=proto,
        formats=formats,
        codecs=codecs,
        address=media_address if media_address is not None else session_address,
    )
    return _Section(media=media, head="m=" + value[: head.end()], start=start, end=end)


def _codec_of(fmt: str, rtpmap: dict[str, str]) -> str | None:
    """A format's codec: its rtpmap's encoding name, else the static payload type's."""
    encoding = rtpmap.get(fmt)
    # Payload types are 0-127: a longer digit run is no static type and never reaches int().
    if encoding is None and len(fmt) <= 3 and fmt.isascii() and fmt.isdigit():
        encoding = STATIC_PAYLOAD_TYPES.get(int(fmt))
    return None if encoding is None else codec_key(encoding)


def media_sections(body: bytes) -> list[MediaSection]:
    """The media sections of an SDP body, one per ``m=`` line, in body order.

    Raises ``SdpError`` for a body that is not SDP: no leading ``v=`` line, no ``m=``
    line, a malformed ``m=`` or ``c=`` line.
    """
    return [section.media for section in _parse(body)[1]]


def media_addresses(body: bytes) -> list[tuple[str, int]]:
    """``(address, port)`` per ``m=`` line: where each side is told to send media.

    Topology-hiding checks compare these with the relay's addresses. A rejected stream has
    port 0 and is listed too. Raises ``SdpError`` as ``media_sections`` does, and when a
    media section has no connection address at either level (RFC 4566 section 5.7 requires
    one), since there is then no answer to give.
    """
    addresses: list[tuple[str, int]] = []
    for number, media in enumerate(media_sections(body), start=1):
        if media.address is None:
            raise SdpError(f"m= line {number} has no c= line at media or session level")
        addresses.append((media.address, media.port))
    return addresses


def _voice_preference(allowed: Sequence[str]) -> dict[str, int]:
    """Canonical voice codec -> rank (0 preferred); non-voice names carry no rank."""
    ranks: dict[str, int] = {}
    for name in allowed:
        codec = canonical_codec(name)
        if codec not in NON_VOICE:
            ranks.setdefault(codec, len(ranks))
    return ranks


def _is_live_audio(media: MediaSection) -> bool:
    """Audio the policy applies to: a rejected stream (port 0) is left as it is."""
    return media.kind.lower() == "audio" and media.port != 0


def _policy_formats(media: MediaSection, ranks: dict[str, int]) -> tuple[list[str], list[str]]:
    """The formats to keep: (allowed voice by preference, non-voice in offer order).

    Voice formats sort by their codec's rank, ties (two payload types of one codec) in
    offer order. Unknown codecs and dynamic payload types without rtpmap are dropped:
    nothing shows that the policy allows them.
    """
    voice: list[tuple[int, int, str]] = []
    non_voice: list[str] = []
    for index, (fmt, codec) in enumerate(zip(media.formats, media.codecs, strict=True)):
        if codec is None:
            continue
        if codec in NON_VOICE:
            non_voice.append(fmt)
        elif codec in ranks:
            voice.append((ranks[codec], index, fmt))
    return [fmt for _, _, fmt in sorted(voice)], non_voice


def apply_codec_policy(body: bytes, allowed: Sequence[str]) -> bytes | None:
    """The offer with the codec policy applied, None when no voice codec is left (488).

    ``allowed`` is the policy: codec names (any spelling ``canonical_codec`` accepts, which
    raises ``ValueError`` for an unknown one) in order of preference. Empty means no policy:
    the body is returned as it is (the same object, unparsed).

    For each audio ``m=`` line with a port other than 0: keep the formats whose codec is
    allowed, ordered by ``allowed`` (two formats of one codec keep their offer order), then
    the non-voice formats (telephone-event, CN) in their offer order, which are kept even
    when ``allowed`` does not name them and never count as a voice codec; drop the
    ``a=rtpmap``, ``a=fmtp`` and ``a=rtcp-fb`` lines of the formats removed. If any such
    section would be left with no voice codec, return None: the caller answers 488.
    Rejected audio streams (port 0), video and other media are not touched, and every line
    not edited is kept byte for byte. When nothing changes, the same bytes object is
    returned. Raises ``SdpError`` when the body is not SDP.
    """
    if not allowed:
        return body
    ranks = _voice_preference(allowed)
    lines, sections = _parse(body)
    dropped: set[int] = set()
    rewritten: dict[int, str] = {}
    for section in sections:
        media = section.media
        if not _is_live_audio(media):
            continue
        voice, non_voice = _policy_formats(media, ranks)
        if not voice:
            return None
        kept = voice + non_voice
        if kept == list(media.formats):
            continue
        rewritten[section.start] = section.head + "".join(" " + fmt for fmt in kept)
        removed = set(media.formats) - set(kept)
        for i in range(section.start + 1, section.end):
            text = lines[i].text
            attribute = _PER_FORMAT.match(text, 2) if text.startswith("a=") else None
            if attribute is not None and attribute.group(1) in removed:
                dropped.add(i)
    if not rewritten:
        return body
    result = [
        _Line(rewritten.get(i, line.text), line.ending)
        for i, line in enumerate(lines)
        if i not in dropped
    ]
    if not lines[-1].ending and result[-1].ending:
        # The body had no trailing newline and its last line went: neither has the result.
        result[-1] = _Line(result[-1].text, b"")
    return b"".join(line.to_bytes() for line in result)


def common_codecs(body: bytes, allowed: Sequence[str]) -> list[str]:
    """The voice codecs the offer and the policy have in common, in preference order.

    Canonical names, for logging and the 488 decision: the union over the audio sections
    with a port other than 0, never telephone-event or CN. With an empty ``allowed`` (no
    policy) every offered voice codec is in common, in offer order, and unknown codecs keep
    their SDP name; a dynamic payload type without rtpmap names no codec. With several
    live audio sections, ``apply_codec_policy`` decides per section, so it may answer None
    while this list is not empty. Raises ``SdpError`` when the body is not SDP, and
    ``ValueError`` for an unknown name in ``allowed``.
    """
    offered: list[str] = []
    for media in media_sections(body):
        if _is_live_audio(media):
            offered.extend(c for c in media.codecs if c is not None and c not in NON_VOICE)
    if not allowed:
        return list(dict.fromkeys(offered))
    present = set(offered)
    return [codec for codec in _voice_preference(allowed) if codec in present]


def merge_policies(account: Sequence[str], gateway: Sequence[str]) -> tuple[str, ...]:
    """The codec policy of one call leg, from the account's list and the gateway's.

    The rule: a codec is allowed when both lists allow it, an empty list allowing every
    codec. The order of preference is the gateway's when it has a list, else the
    account's. Names come out canonical (``canonical_codec``, which raises ``ValueError``
    for an unknown one), each once; telephone-event and CN are left out, since the policy
    keeps them whenever they are offered. Both lists empty gives ``()``: no policy. When
    a non-empty list leaves no voice codec allowed (the two lists share none, or a list
    names only non-voice formats), the result is ``ALLOWS_NO_VOICE``, never ``()``, so the
    call is answered 488 instead of running with no policy at all.

    ``merge_policies(["G729", "PCMA"], ["PCMA", "PCMU", "G729"]) == ("PCMA", "G729")``
    """
    if not account and not gateway:
        return ()
    account_ranks = _voice_preference(account)
    gateway_ranks = _voice_preference(gateway)
    if not gateway:
        merged = tuple(account_ranks)
    elif not account:
        merged = tuple(gateway_ranks)
    else:
        merged = tuple(codec for codec in gateway_ranks if codec in account_ranks)
    return merged or ALLOWS_NO_VOICE
