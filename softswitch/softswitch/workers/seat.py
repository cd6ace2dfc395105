"""What a worker process gets from its supervisor: its index, its sockets, the shared state.

``proxy.server.serve`` takes a :class:`Seat` (None: the single process of one worker). The
primary (index 0) is the one that talks to the world beyond SIP: the management API, the
OPTIONS prober (its verdicts go to the shared table every worker reads) and the alarms.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from softswitch.stats import Statistics
from softswitch.transport import Address, Transport

from .handoff import Handoff
from .live import SharedLiveState, SharedState
from .peers import Handler, PeerAnswerer, Peers
from .sockets import WorkerSockets
from .statistics import ForwardingStatistics, StatsInbox

__all__ = ["Seat"]


@dataclass(frozen=True)
class Seat:
    index: int
    count: int
    shared: SharedState
    sockets: WorkerSockets
    #: Every worker's own addresses (the siblings' too: they are ours, see ``add_ours``).
    own_addresses: tuple[tuple[Transport, Address], ...]
    #: Write end of the supervisor's pipe: one byte, this worker's index, once it listens
    #: (hence at most ``MAX_WORKERS`` workers, 256).
    ready_fd: int
    #: The statistics channel (``workers.statistics``): the primary's end, the others' end.
    stats_inbox: socket.socket
    stats_outbox: socket.socket
    #: (the primary's end, worker i's end) for workers 1 .. count-1 (``workers.peers``).
    peer_ends: tuple[tuple[socket.socket, socket.socket], ...] = ()
    #: (the sending end, the receiving end) of worker i's hand-off channel, for every
    #: worker (``workers.handoff``); empty: no hand-off (a test's seat).
    handoff_ends: tuple[tuple[socket.socket, socket.socket], ...] = ()
    #: The supervisor's pid, for a reload of every worker asked here (the management API):
    #: a SIGHUP to it (None: a test's seat, no supervisor).
    supervisor: int | None = None

    @property
    def primary(self) -> bool:
        return self.index == 0

    def live(self) -> SharedLiveState:
        return SharedLiveState(self.shared, self.index)

    def statistics(self) -> Statistics | None:
        """A non-primary worker's statistics, sent on to the primary (None: the primary's
        are the switch's own)."""
        return None if self.primary else ForwardingStatistics(self.stats_outbox, self.index)

    def inbox(self, stats: Statistics) -> StatsInbox | None:
        """The primary's reader of the other workers' events (None: not the primary)."""
        return StatsInbox(self.stats_inbox, stats) if self.primary else None

    def peers(self) -> Peers | None:
        """The primary's line to the other workers' live calls (None: not the primary)."""
        return Peers([ends[0] for ends in self.peer_ends]) if self.primary else None

    def answerer(self, handle: Handler) -> PeerAnswerer | None:
        """A non-primary worker's answers to the primary (None: the primary)."""
        return None if self.primary else PeerAnswerer(self.peer_ends[self.index - 1][1], handle)

    def handoff(self) -> Handoff | None:
        """This worker's hand-off of the requests another worker owns (None: none)."""
        if len(self.handoff_ends) != self.count or self.count < 2:
            return None
        senders = [ends[0] for ends in self.handoff_ends]
        return Handoff(
            self.index, senders, self.handoff_ends[self.index][1], self.sockets.steering_key
        )

    def close_unused(self) -> None:
        """In the child after the fork: the ends of channels this worker does not use."""
        for n, (_, inbox) in enumerate(self.handoff_ends):
            if n != self.index:
                inbox.close()
        (self.stats_outbox if self.primary else self.stats_inbox).close()
        for n, (primary_end, worker_end) in enumerate(self.peer_ends, start=1):
            if not self.primary:
                primary_end.close()
            if n != self.index:
                worker_end.close()

    def ready(self) -> None:
        """Tell the supervisor this worker takes calls."""
        os.write(self.ready_fd, bytes([self.index]))  # below MAX_WORKERS: one byte

    def reload_asked(self) -> int:
        """The SIGHUPs the supervisor asked of this worker so far (``reload_acks``): read by
        the SIGHUP handler, answered by :meth:`reloaded` once the reload is over."""
        return self.shared.reload_acks.asked(self.index)

    def reloaded(self, upto: int) -> None:
        """Tell the supervisor the reload started when ``upto`` SIGHUPs were asked is over."""
        self.shared.reload_acks.answer(self.index, upto)
