"""The one exception a peer's malformed SIP can raise.

A malformed message is the peer's fault, not ours (DESIGN.md, principle 6), so it gets its
own exception type carrying what a stateless reply needs: the status and the reason phrase
for ``400 <reason>`` (or 505/416), and whatever headers could still be read so the reply can
copy Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6.2).
"""

from __future__ import annotations

__all__ = ["SipParseError"]


class SipParseError(ValueError):
    """Malformed SIP from a peer.

    ``reason`` is short enough to be a reason phrase; ``status`` is the response code the
    RFC asks for (400 unless said otherwise); ``partial`` holds ``(name, raw value)`` pairs
    of the Via, From, To, Call-ID and CSeq header fields found before the error, in message
    order, with canonical names, so a stateless error reply can be built when a Via exists.
    """

    def __init__(
        self,
        reason: str,
        status: int = 400,
        partial: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial

    def __repr__(self) -> str:
        return f"SipParseError({self.reason!r}, status={self.status})"
