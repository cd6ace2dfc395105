"""The RFC 3261 transaction timers (section 17, table 4) and their values per transport.

Kept apart from the state machines so the numbers an operator may tune (T1, T2, T4) and
the rule "reliable transports do not retransmit" live in one small place that the tests
can check against the RFC's table directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Timer", "TimerConfig"]


class Timer(enum.Enum):
    """RFC 3261 table 4. The comment is the RFC's meaning, not our implementation."""

    # Identity hash (C) rather than Enum's hash of the name (Python): timers key the
    # transactions' deadline dicts, probed on every message.
    __hash__ = object.__hash__

    A = "A"  # INVITE request retransmit interval, UDP only
    B = "B"  # INVITE transaction timeout
    D = "D"  # wait time for response retransmits (client INVITE, Completed)
    E = "E"  # non-INVITE request retransmit interval, UDP only
    F = "F"  # non-INVITE transaction timeout
    G = "G"  # INVITE response retransmit interval
    H = "H"  # wait time for ACK receipt
    I = "I"  # wait time for ACK retransmits  # noqa: E741 - the RFC's name
    J = "J"  # wait time for non-INVITE request retransmits
    K = "K"  # wait time for response retransmits (client non-INVITE, Completed)


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2, T4 (RFC 3261 17.1.1.1 and table 4) and Timer D, which has its own floor.

    Defaults are the RFC's. A switch on a LAN with carriers may lower T1; RFC 3261 allows
    that only when the RTT is known, so it is the operator's decision, never automatic.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0 or self.timer_d < 0:
            raise ValueError("need 0 < T1 <= T2, T4 > 0 and Timer D >= 0")

    def initial(self, timer: Timer, *, reliable: bool) -> float | None:
        """The first duration of ``timer``, or None when the transport does not use it.

        Zero means "fire at once": on a reliable transport the Completed/Confirmed states
        exist only to absorb retransmissions, and there are none.
        """
        t1 = self.t1
        if timer in (Timer.A, Timer.E, Timer.G):
            return None if reliable else t1
        if timer in (Timer.B, Timer.F, Timer.H):
            return 64 * t1
        if timer is Timer.D:
            return 0.0 if reliable else self.timer_d
        if timer is Timer.J:
            return 0.0 if reliable else 64 * t1
        # Timer.I and Timer.K
        return 0.0 if reliable else self.t4

    def backoff(self, timer: Timer, previous: float) -> float:
        """The next retransmission interval after ``timer`` fired with ``previous``.

        INVITE requests double without a cap (17.1.1.2); non-INVITE requests and INVITE
        final responses double up to T2 (17.1.2.2, 17.2.1).
        """
        if timer is Timer.A:
            return 2 * previous
        return min(2 * previous, self.t2)
