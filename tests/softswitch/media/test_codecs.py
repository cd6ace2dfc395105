"""Codec names: the spellings operators use map to SDP encoding names, and nothing else does."""

from __future__ import annotations

import pytest

from softswitch.media.codecs import (
    CODECS,
    NON_VOICE,
    STATIC_PAYLOAD_TYPES,
    canonical_codec,
    codec_key,
)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        # What VOS3000 operators write.
        ("g711a", "PCMA"),
        ("g711u", "PCMU"),
        ("g729a", "G729"),
        ("g723", "G723"),
        # Other spellings seen in configs and on device web pages.
        ("G.711u", "PCMU"),
        ("G.711 u-law", "PCMU"),
        ("G711_ULAW", "PCMU"),
        ("g711µ", "PCMU"),
        ("ulaw", "PCMU"),
        ("mu-law", "PCMU"),
        ("pcmu", "PCMU"),
        ("G.711a", "PCMA"),
        ("G711-alaw", "PCMA"),
        ("alaw", "PCMA"),
        ("A-law", "PCMA"),
        ("G.729", "G729"),
        ("G729AB", "G729"),
        ("g729b", "G729"),
        ("G.723.1", "G723"),
        ("g7231", "G723"),
        ("g722", "G722"),
        ("gsm", "GSM"),
        ("GSM-FR", "GSM"),
        ("ilbc", "iLBC"),
        ("OPUS", "opus"),
        ("amr", "AMR"),
        ("AMR-NB", "AMR"),
        ("amr-wb", "AMR-WB"),
        ("AMRWB", "AMR-WB"),
        ("G.722.2", "AMR-WB"),
        ("Speex", "speex"),
        ("telephone-event", "telephone-event"),
        ("rfc2833", "telephone-event"),
        ("DTMF", "telephone-event"),
        ("cn", "CN"),
        ("  PCMA  ", "PCMA"),
    ],
)
def test_operator_spellings_map_to_the_sdp_encoding_name(written: str, canonical: str) -> None:
    assert canonical_codec(written) == canonical


@pytest.mark.parametrize("name", CODECS)
def test_canonical_names_map_to_themselves_in_any_case(name: str) -> None:
    assert canonical_codec(name) == name
    assert canonical_codec(name.upper()) == name
    assert canonical_codec(name.lower()) == name
    assert codec_key(name) == name


@pytest.mark.parametrize("bad", ["g728", "G729D", "g726", "H264", "", "pcm", "711", "g.72"])
def test_unknown_names_raise_value_error_listing_the_known_ones(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown codec") as raised:
        canonical_codec(bad)
    message = str(raised.value)
    assert repr(bad) in message
    for name in ("PCMU", "PCMA", "G729", "G723", "opus", "telephone-event"):
        assert name in message


def test_non_voice_names_are_canonical_and_only_dtmf_and_comfort_noise() -> None:
    assert frozenset({"telephone-event", "CN"}) == NON_VOICE
    assert all(canonical_codec(name) == name for name in NON_VOICE)


@pytest.mark.parametrize(
    ("payload_type", "encoding"),
    [(0, "PCMU"), (3, "GSM"), (4, "G723"), (8, "PCMA"), (9, "G722"), (13, "CN"), (18, "G729")],
)
def test_rfc3551_static_payload_types(payload_type: int, encoding: str) -> None:
    assert STATIC_PAYLOAD_TYPES[payload_type] == encoding


def test_static_table_has_no_dynamic_or_reserved_types() -> None:
    assert 2 not in STATIC_PAYLOAD_TYPES  # G721 of RFC 1890, withdrawn
    assert 19 not in STATIC_PAYLOAD_TYPES
    assert all(pt < 96 for pt in STATIC_PAYLOAD_TYPES)


def test_static_table_names_of_known_codecs_are_canonical() -> None:
    for encoding in STATIC_PAYLOAD_TYPES.values():
        if encoding in CODECS:
            assert canonical_codec(encoding) == encoding


@pytest.mark.parametrize(
    ("encoding", "key"),
    [
        ("pcmu", "PCMU"),
        ("G729a", "G729"),
        ("OPUS", "opus"),
        ("telephone-event", "telephone-event"),
        ("H264", "H264"),
        ("red", "red"),
        ("G729D", "G729D"),
        ("L16", "L16"),
        ("", ""),
    ],
)
def test_codec_key_canonicalises_known_sdp_names_and_keeps_unknown_ones(
    encoding: str, key: str
) -> None:
    assert codec_key(encoding) == key
