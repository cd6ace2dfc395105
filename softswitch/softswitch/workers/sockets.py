"""The workers' sockets, bound by the supervisor before the fork.

Two kinds per worker:

* **Listen sockets**: for every ``[server] listen`` address, one socket per worker, all
  bound to that address with ``SO_REUSEPORT``. A UDP request belongs to the worker its
  Call-ID hashes to (``steering.call_id_owner``), so one peer's calls from a single source
  ip:port spread over every worker, and an INVITE's retransmissions, its CANCEL and the ACK
  of a failure (same Call-ID) reach the worker that has its transaction. On a UDP address
  the group gets a classic BPF program (``steering``) with which the kernel itself delivers
  most requests to their owner; one it delivered elsewhere (a Call-ID past the program's
  window, a kernel that refuses the program: one WARNING; ``[server] steer_by_call_id =
  false``) is handed to its owner by the worker that got it (``handoff``). The hash is keyed
  (``steering.SteeringKey``): one key for every group and every worker's hand-off, drawn by
  the supervisor before it binds, kept in each worker's :class:`WorkerSockets`. A datagram with
  no Call-ID and TCP stay with the kernel's hash of the 4-tuple (source and destination
  address and port): a TCP connection's messages all reach the worker that accepted it.
* **Own sockets**: one per worker for every transport and host of the listen addresses, on a
  port of that worker alone: ``[server] worker_port_base`` + index when set, otherwise a
  port the kernel picks at start. A worker writes its own port in the Via of every request it
  sends and in its Record-Route, and sends requests from that socket, so responses and the
  dialog's later requests (ACK, BYE, re-INVITE) come back to the worker that has the call.

The supervisor keeps every socket open for its whole life: a worker that dies is replaced by
one that inherits the same sockets (nothing queued on them is lost, the reuse-port group
keeps its size and its bind order, so other calls' Call-IDs and 4-tuples still map to the
same workers), and a port in use is one clear error at start, before any worker runs.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from softswitch.config import parse_listen
from softswitch.transport import Address, Transport

from .steering import (
    SteeringKey,
    attach_call_id_steering,
    call_id_program,
    converted_size_estimate,
)

__all__ = ["WorkerSockets", "bind_worker_sockets", "close_all"]

logger = logging.getLogger("softswitch.workers")


@dataclass(frozen=True)
class WorkerSockets:
    """One worker's sockets: ``(transport, socket, own)``; ``own`` marks its own port."""

    sockets: list[tuple[Transport, socket.socket, bool]] = field(default_factory=list)
    #: The key the Call-ID program of the listen groups hashes with: the worker's hand-off
    #: must find the owner with the same one (``handoff.Handoff``).
    steering_key: SteeringKey = field(kw_only=True, repr=False)

    def own_addresses(self) -> list[tuple[Transport, Address]]:
        return [(t, _address(s)) for t, s, own in self.sockets if own]


def _address(sock: socket.socket) -> Address:
    name = sock.getsockname()
    return (str(name[0]), int(name[1]))


def _shown(transport: Transport, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{transport.name.lower()}:{shown}:{port}"


def _new(transport: Transport, host: str, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport is Transport.UDP else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    if family == socket.AF_INET6 and transport is Transport.TCP:
        # As asyncio's own TCP listeners (its UDP endpoints keep the system's dual stack).
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if transport is Transport.TCP:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setblocking(False)
    return sock


def _bind(sock: socket.socket, transport: Transport, address: Address, what: str) -> None:
    try:
        sock.bind(address)
        if transport is Transport.TCP:
            sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise OSError(
            f"cannot listen on {_shown(transport, *address)}{what}:"
            f" {reason[:1].lower() + reason[1:]}"
        ) from exc


def bind_worker_sockets(
    listen: Sequence[str],
    workers: int,
    port_base: int | None,
    *,
    steer_by_call_id: bool = True,
    steering_key: SteeringKey | None = None,
) -> list[WorkerSockets]:
    """Every worker's sockets (index i: worker i), or ``OSError`` naming the address and
    what it is for when one cannot be bound; nothing stays open after an error.

    ``steer_by_call_id``: with more than one worker, each UDP listen group picks the worker
    by Call-ID (``steering``); False leaves every group to the kernel's 4-tuple hash (the
    workers' hand-off, ``handoff``, still brings each request to the worker that owns it).
    ``steering_key``: the Call-ID hash's key, kept in every :class:`WorkerSockets` (None: a
    new random one; a test passes its own to know each Call-ID's owner)."""
    key = SteeringKey.random() if steering_key is None else steering_key
    result = [WorkerSockets(steering_key=key) for _ in range(workers)]
    opened: list[socket.socket] = []
    steer = steer_by_call_id and workers > 1
    if not steer_by_call_id and workers > 1:
        logger.info(
            "no Call-ID program on the UDP listen sockets ([server] steer_by_call_id = false):"
            " each request the kernel gives to another worker than its Call-ID's is handed on"
        )
    try:
        hosts: list[tuple[Transport, str]] = []
        for item in listen:
            proto, host, port = parse_listen(item)
            transport = Transport.TCP if proto == "tcp" else Transport.UDP
            # Without SO_REUSEPORT first: fails when anyone holds the address, a switch that
            # already runs included (a reuse-port group would take the newcomer in silently).
            probe = _new(transport, host, reuse_port=False)
            _bind(probe, transport, (host, port), "")
            port = _address(probe)[1]  # port 0: the group shares the one the kernel picked
            probe.close()
            for worker in result:
                sock = _new(transport, host, reuse_port=True)
                opened.append(sock)
                _bind(sock, transport, (host, port), "")
                worker.sockets.append((transport, sock, False))
            if steer and transport is Transport.UDP:
                group = [w.sockets[-1][1] for w in result]
                steer = _steer(group, _shown(transport, host, port), key)
            if (transport, host) not in hosts:
                hosts.append((transport, host))
        for index, worker in enumerate(result):
            for transport, host in hosts:
                port = 0 if port_base is None else port_base + index
                sock = _new(transport, host, reuse_port=False)
                opened.append(sock)
                what = f" (worker {index}'s own port; [server] worker_port_base)"
                _bind(sock, transport, (host, port), what)
                worker.sockets.append((transport, sock, True))
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    return result


def _steer(group: list[socket.socket], shown: str, key: SteeringKey) -> bool:
    """Attach the Call-ID program hashing with ``key`` to ``group`` (bound, in worker
    order); False, after one WARNING, when the kernel refuses it: the next groups are not
    tried."""
    if not sys.platform.startswith("linux"):
        reason = f"SO_ATTACH_REUSEPORT_CBPF is Linux only (this is {sys.platform})"
    else:
        try:
            attach_call_id_steering(group[0], len(group), key)
        except OSError as exc:
            reason = f"the kernel refused SO_ATTACH_REUSEPORT_CBPF on {shown}: {exc}"
            if exc.errno == errno.ENOMEM:
                size = converted_size_estimate(call_id_program(len(group), key))
                reason += (
                    f"; the program needs about {size} bytes once the kernel converted it,"
                    " more than net.core.optmem_max allows (20480 by default before Linux"
                    " 6.9): `sysctl net.core.optmem_max=262144` lets it attach (set in each"
                    " network namespace since Linux 6.9)"
                )
        else:
            return True
    logger.warning(
        "the kernel delivers UDP requests to the workers by source address and port, not by"
        " Call-ID: calls are still spread by Call-ID, each request handed on to the worker"
        " that owns it, at the cost of one more hop: %s",
        reason,
    )
    return False


def close_all(groups: Sequence[WorkerSockets], keep: WorkerSockets | None = None) -> None:
    """Close every socket of ``groups`` except ``keep``'s (a worker drops its siblings')."""
    for group in groups:
        if group is keep:
            continue
        for _, sock, _ in group.sockets:
            sock.close()
