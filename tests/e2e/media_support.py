"""What the media tests read and ask: SIPp's message logs, rtpengine's per-call view.

SIPp runs with ``-trace_msg`` (``callflow_harness.Sipp``), so each SIPp leaves every message
it sent and received, byte for byte, in ``<name>_messages.log``; ``sip_log`` reads it back
as ``SipMessage`` objects whose ``body`` is the exact SDP. ``ng_query`` asks the rtpengine
of the test (over the switch's own NG client, ``softswitch.media.ng``) what it knows of one
NG session: ``None`` once the session is gone (deleted), else the ``query`` reply, which
``packet_totals`` turns into packets received from each party.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from callflow_harness import LOCAL, Sipp

from softswitch.media.ng import NgClient, NgError, Reply, packet_totals

__all__ = [
    "SipMessage",
    "m_line",
    "m_port",
    "ng_query",
    "ng_sessions",
    "ng_totals",
    "relay_tail",
    "sdp_ports",
    "sip_call_id",
    "sip_log",
    "wait_for",
    "write_tone",
]

T = TypeVar("T")

#: SIPp's separator between two logged messages (a received message has no newline after
#: it, so the separator may follow its last byte on the same line).
_SEPARATOR = re.compile(r"-{47} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\n")
_HEADING = re.compile(r"^(?:\w+ message (sent|received)[^\n]*)\n\n", re.ASCII)


@dataclass(frozen=True)
class SipMessage:
    """One message as SIPp logged it: ``sent`` by that SIPp or received by it."""

    sent: bool
    text: str

    @property
    def head(self) -> str:
        return self.text.partition("\r\n\r\n")[0]

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, colon, value = line.partition(":")
            if colon and key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def method(self) -> str:
        """The CSeq method (``INVITE`` for a 200 to an INVITE)."""
        cseq = self.header("CSeq") or ""
        return cseq.split()[-1] if cseq else ""

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int | None:
        return int(self.first_line.split()[1]) if self.is_response else None

    def __str__(self) -> str:
        return f"{'sent' if self.sent else 'received'}: {self.first_line}"

    @property
    def body(self) -> str:
        """The body, exactly ``Content-Length`` bytes (SDP is ASCII)."""
        length = self.header("Content-Length") or self.header("l") or "0"
        rest = self.text.partition("\r\n\r\n")[2]
        return rest[: int(length)]


def sip_log(sipp: Sipp) -> list[SipMessage]:
    """Every message SIPp ``sipp`` sent or received, in order, byte for byte (read as bytes:
    ``Sipp.messages`` reads text, whose newline translation turns CRLF into LF)."""
    path = sipp.workdir / f"{sipp.name}_messages.log"
    text = path.read_bytes().decode("latin-1") if path.exists() else ""
    messages = []
    for chunk in _SEPARATOR.split(text):
        match = _HEADING.match(chunk)
        if match is None:
            continue
        body = chunk[match.end() :]
        messages.append(SipMessage(match.group(1) == "sent", body))
    return messages


def find(
    messages: list[SipMessage],
    *,
    sent: bool,
    start: str,
    method: str | None = None,
    cseq: str | None = None,
    index: int = 0,
) -> SipMessage:
    """The ``index``-th message sent (or received) whose first line starts with ``start``
    (``"INVITE "``, ``"SIP/2.0 200"``), whose CSeq method is ``method`` and whose whole CSeq
    is ``cseq`` (``"2 INVITE"``), those given."""
    found = [
        m
        for m in messages
        if m.sent == sent
        and m.first_line.startswith(start)
        and (method is None or m.method == method)
        and (cseq is None or m.header("CSeq") == cseq)
    ]
    if len(found) <= index:
        lines = "\n".join(map(str, messages))
        raise AssertionError(f"no message #{index} {start!r} {method} sent={sent} in:\n{lines}")
    return found[index]


def m_line(sdp: str) -> str:
    """The SDP's first ``m=`` line."""
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            return line
    raise AssertionError(f"no m= line in {sdp!r}")


def m_port(sdp: str) -> int:
    return int(m_line(sdp).split()[1])


def sdp_ports(sdp: str) -> set[int]:
    """Every port the SDP names: its m= lines' and its ``a=rtcp:`` attributes'."""
    ports = set()
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            ports.add(int(line.split()[1]))
        elif line.startswith("a=rtcp:"):
            ports.add(int(line[len("a=rtcp:") :].split()[0]))
    return ports


def sip_call_id(sipp: Sipp, call_number: int = 1) -> str:
    """SIPp's ``[call_id]`` of its ``call_number``-th call: ``<n>-<pid>@<local ip>``."""
    assert sipp.process is not None
    return f"{call_number}-{sipp.process.pid}@{LOCAL}"


def write_tone(workdir: Path, seconds: float = 1.0) -> Path:
    """``tone.raw``: raw 8 kHz 8-bit G.711 for SIPp's ``rtp_stream`` (160 bytes a packet).
    The content is a square wave; only the packets matter to the relay."""
    path = workdir / "tone.raw"
    samples = int(8000 * seconds)
    path.write_bytes(bytes(0x55 if (i // 8) % 2 else 0xD5 for i in range(samples)))
    return path


def relay_tail(ng_port: int, *, media: str = "", relay_id: str = "rtp1") -> str:
    """``[media]`` (its body ``media``) and one ``[[media_relays]]`` at ``ng_port``."""
    return "\n".join(
        [
            "[media]",
            media,
            "[[media_relays]]",
            f'id = "{relay_id}"',
            f'address = "{LOCAL}:{ng_port}"',
            "weight = 1",
        ]
    )


async def _query(port: int, call_id: str) -> Reply | None:
    client = await NgClient.open(LOCAL, port, timeout=0.5, retries=2)
    try:
        return await client.query(call_id)
    except NgError as exc:
        if "unknown call" in exc.reason.lower():
            return None
        raise
    finally:
        client.close()


def ng_query(port: int, call_id: str) -> Reply | None:
    """rtpengine's ``query`` reply for the NG session ``call_id``; ``None`` when rtpengine
    does not know it (never created, or deleted)."""
    return asyncio.run(_query(port, call_id))


async def _list(port: int) -> list[str]:
    client = await NgClient.open(LOCAL, port, timeout=0.5, retries=2)
    try:
        reply = await client.request({"command": "list", "limit": 1000})
    finally:
        client.close()
    calls = reply.get("calls")
    assert isinstance(calls, list), reply
    return [c.decode() for c in calls if isinstance(c, bytes)]


def ng_sessions(port: int, sip_call_id: str) -> list[str]:
    """The NG sessions rtpengine holds for the SIP call ``sip_call_id`` (``<Call-ID>-<n>``),
    by their attempt number."""
    prefix = sip_call_id + "-"
    names = [c for c in asyncio.run(_list(port)) if c.startswith(prefix)]
    return sorted(names, key=lambda name: int(name[len(prefix) :]))


def ng_totals(port: int, call_id: str) -> dict[str, int] | None:
    """RTP packets rtpengine received from each party (by SIP tag) in session ``call_id``."""
    reply = ng_query(port, call_id)
    return None if reply is None else packet_totals(reply)


def wait_for(probe: Callable[[], T], timeout: float, *, interval: float = 0.2, what: str = "") -> T:
    """The first truthy ``probe()`` within ``timeout`` seconds; AssertionError with the last
    value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {value!r}")
        time.sleep(interval)
