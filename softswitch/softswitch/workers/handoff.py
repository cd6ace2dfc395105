"""A request that reached the wrong worker goes on to its owner: the hand-off.

The worker that owns a UDP request is a function of its Call-ID alone
(``steering.call_id_owner``): the owner has, or will have, the transaction of the INVITE, so
its retransmissions, its CANCEL and the ACK of a failure must reach it whatever socket of the
reuse-port group the kernel gave them to. The hash is keyed (``steering.SteeringKey``), and
every worker's hand-off must have the key of the listen groups' program, or kernel and
workers would disagree on the owner. The kernel's Call-ID program (``steering``) makes
that the common case; when it did not (a Call-ID past its window, a kernel that refused the
program, ``[server] steer_by_call_id = false``), the worker that got the datagram hands it
on, once: the owner takes it as if its own socket of the same listen address had received
it, so its answers leave from the address the caller sent to. A datagram with no Call-ID
(a keep-alive, garbage, STUN) is handled where it arrived, as is a handed one: a datagram
is never handed twice.

The channel: for every worker a ``SOCK_DGRAM`` socket pair made by the supervisor before the
fork. Every worker holds the sending end of every pair, the owner alone the receiving end
of its own (the supervisor holds both, so a restarted worker inherits its queue). Sending on
a pair's end skips the receiver's queue-length limit (``net.unix.max_dgram_qlen``); what
bounds it is the sending end's buffer, asked for with ``SO_SNDBUFFORCE`` (root or
``CAP_NET_ADMIN``) and else with ``SO_SNDBUF``, which Linux caps at twice
``net.core.wmem_max``; the sizes the kernel granted are logged once at start, at WARNING
when they hold less than about a second of hand-offs at 2,000 requests a second.

A full buffer (an owner that is dead, restarting or stuck) or any error: the datagram is
dropped, counted, with a WARNING at most once a second. It is not handled where it
arrived: earlier datagrams of the same call may still wait in the owner's queue, and the
owner (or its successor) would take them later, so a request handled here too could become
a second call, and the CANCEL that goes to the owner would find no transaction. Dropped,
the request waits for its owner: the caller retransmits it, and the retransmission is
handed again or queued behind the first copy.

A source on the block list is dropped before the hand-off (:func:`blocked_sources`), as the
screening would drop it in the owner: a flood from a blocked address then costs no hand-off
and cannot fill an owner's channel.

A handed datagram: one line ``<listen host> <listen port> <source host> <source port>\\n``,
then the datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Final

from softswitch.security.guard import SourceGuard
from softswitch.transport import Address

from .steering import SteeringKey, call_id_owner

__all__ = ["Handoff", "Inject", "blocked_sources", "handoff_channels"]

logger = logging.getLogger("softswitch.workers")

#: Bytes asked for each end's buffers (the kernel doubles it for its bookkeeping; without
#: CAP_NET_ADMIN it caps the result at twice ``net.core.wmem_max`` / ``rmem_max``).
_BUFFER: Final = 4 * 1024 * 1024
#: ``SO_SNDBUFFORCE`` / ``SO_RCVBUFFORCE`` of Linux's asm-generic socket.h (not in Python's
#: ``socket``): the size asked for whatever the sysctl caps, for root or CAP_NET_ADMIN.
_SO_SNDBUFFORCE: Final = 32
_SO_RCVBUFFORCE: Final = 33
#: What the kernel charges a queued datagram of 1.5 KB (its data and its skb).
_QUEUED_REQUEST: Final = 2304
#: Buffer bytes for about a second of hand-offs at 2,000 requests a second of 1.5 KB: less
#: than this is logged at WARNING.
_ENOUGH: Final = 2000 * _QUEUED_REQUEST
#: The largest handed datagram: a UDP datagram and its line.
_PACKET: Final = 65536 + 256
#: Datagrams read per wake-up, so a flood of hand-offs cannot starve the rest of the loop.
_BATCH: Final = 64
#: Seconds between two WARNINGs about hand-offs that failed.
_WARN_EVERY: Final = 1.0

#: The owner's transport taking a handed datagram: (datagram, listen address, source).
Inject = Callable[[bytes, Address, Address], None]


def handoff_channels(workers: int) -> list[tuple[socket.socket, socket.socket]]:
    """(the sending end, the receiving end) of worker i's channel, for every worker; the
    buffer sizes the kernel granted are logged once (INFO, or WARNING when too small)."""
    pairs = []
    for _ in range(workers):
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in pair:
            _grow(sock, _SO_SNDBUFFORCE, socket.SO_SNDBUF)
            _grow(sock, _SO_RCVBUFFORCE, socket.SO_RCVBUF)
            sock.setblocking(False)
        pairs.append(pair)
    if pairs:
        sender, inbox = pairs[0]
        sent = sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        received = inbox.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        small = sent < _ENOUGH
        logger.log(
            logging.WARNING if small else logging.INFO,
            "hand-off channels: %d bytes to send, %d to receive per worker (about %d"
            " requests of 1.5 KB)%s",
            sent,
            received,
            sent // _QUEUED_REQUEST,
            "; raise net.core.wmem_max and rmem_max (deployment.md) or run with"
            " CAP_NET_ADMIN, or requests for a stalled worker are dropped after a fraction"
            " of a second"
            if small
            else "",
        )
    return pairs


def _grow(sock: socket.socket, forced: int, plain: int) -> None:
    """Ask for :data:`_BUFFER` past the sysctl cap (``forced``), else up to it (``plain``)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, _BUFFER)
    except OSError:  # EPERM without CAP_NET_ADMIN
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, plain, _BUFFER)


def blocked_sources(guard: SourceGuard) -> Callable[[Address], bool]:
    """Whether the screening (``SourceGuard.packet``) would drop a datagram from a source
    for its block alone: blocked, not a customer's or gateway's address, and ``[security]
    blocked_source = "drop"``. Counted as the screening counts it; no pike counting, so a
    source's packets are counted once, by the worker that parses them."""

    def blocked(source: Address) -> bool:
        ip, port = source
        blocks = guard.blocks
        if not len(blocks) or ip not in blocks or guard.security.blocked_source != "drop":
            return False
        now = guard.clock()
        if not blocks.is_blocked(ip, now) or guard.is_known(ip, port, now):
            return False
        guard.refusals.note(ip, "blocked", now)
        return True

    return blocked


class Handoff:
    """One worker's side: :meth:`divert` on the datagrams of its listen sockets, and the
    handed datagrams of its own channel injected into its transport."""

    def __init__(
        self,
        index: int,
        senders: Sequence[socket.socket],
        inbox: socket.socket,
        key: SteeringKey,
    ) -> None:
        """``key``: the Call-ID hash's key, the one the listen groups' program was made with
        (``WorkerSockets.steering_key``)."""
        self.index = index
        self.count = len(senders)
        self._key = key
        self._senders = list(senders)
        self._inbox = inbox
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inject: Inject | None = None
        self._warned = 0.0
        #: Datagrams dropped since the last WARNING.
        self._dropped = 0
        #: Datagrams dropped since the start (its channel full, or an error).
        self.dropped = 0

    def divert(self, data: bytes, local: Address, source: Address) -> bool:
        """True when ``data`` (received on the listen address ``local`` from ``source``)
        belongs to another worker: handed to it, or dropped when that cannot be done (see
        the module docstring); False: handle it here."""
        owner = call_id_owner(data, self.count, self._key)
        if owner is None or owner == self.index:
            return False
        line = f"{local[0]} {local[1]} {source[0]} {source[1]}\n".encode()
        try:
            self._senders[owner].send(line + data)
        except OSError as exc:
            self.dropped += 1
            self._dropped += 1
            now = time.monotonic()
            if now - self._warned >= _WARN_EVERY:
                self._warned = now
                logger.warning(
                    "cannot hand %d datagrams to worker %d (%s): dropped; their callers retransmit",
                    self._dropped,
                    owner,
                    "it is not reading" if isinstance(exc, BlockingIOError) else exc,
                )
                self._dropped = 0
        return True

    def start(self, inject: Inject) -> None:
        """Read the handed datagrams on the running loop, each into ``inject``."""
        self._inject = inject
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._inbox.fileno(), self._read)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._inbox.fileno())
            self._loop = None

    def _read(self) -> None:
        assert self._inject is not None
        for _ in range(_BATCH):
            try:
                packet = self._inbox.recv(_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("reading handed datagrams failed: %s", exc)
                return
            line, _, data = packet.partition(b"\n")
            try:
                local_host, local_port, source_host, source_port = line.decode().split(" ")
                local = (local_host, int(local_port))
                source = (source_host, int(source_port))
            except ValueError:
                logger.warning("a handed datagram without its addresses dropped")
                continue
            try:
                self._inject(data, local, source)
            except Exception:
                logger.exception("a handed datagram failed")
