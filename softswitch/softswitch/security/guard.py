"""The two questions a public port asks before it spends anything on a stranger.

``SourceGuard.packet``: asked for every datagram or stream message, before its bytes are
parsed. A blocked source is dropped here (when ``[security] blocked_source = "drop"``), and
the requests of sources that no account or gateway matches are counted by pike: the one
that takes a source over ``pike_rate`` blocks it for ``block_time``. Known sources (an
account's ``ips``, a gateway's address, an address that passed digest recently) are never
counted or blocked here: a customer's traffic is limited by its account's ``max_cps``, and a
block must not let someone who spoofs a customer's source address cut that customer off.

``SourceGuard.screen``: asked for each request that belongs to no call in progress, before
the engine creates a transaction for it. An INVITE goes on from a customer's address (an
account's ``ips``, or one that passed digest recently); other requests (OPTIONS pings, say)
go on from a customer's or a gateway's. Its answer is ``None`` (go on: the request becomes
stateful, a call gets its 100 Trying and its CDR) or a ``Screen``: answer once,
statelessly, or drop. Strangers never get a transaction, a 100 Trying, a retransmitted
answer or a CDR row: so a flood of INVITEs costs a parse and one datagram each, and a
spoofed source cannot use the switch as an amplifier (one response per request at most).
An INVITE from a stranger that carries credentials for our realm goes on, since digest
accounts may call from any address; one without is challenged statelessly when digest
accounts exist.

Every refusal is counted per source and reason (``refusals``), never a CDR row or a log line
each. The clock is monotonic (``time.monotonic`` unless a test passes its own).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import SecurityConfig
from ..sip.message import Request
from .pike import Blocklist, Pike
from .refusals import RefusalCounters

__all__ = ["DROP", "TRUST_TIME", "Screen", "SourceGuard", "gateway_addresses"]

logger = logging.getLogger("softswitch.security")

#: Seconds an address that passed digest authentication counts as known (pike exempt).
TRUST_TIME = 3600.0
#: (ip, port) -> known, cached between reloads; cleared when it grows past this.
_KNOWN_CACHE_MAX = 65536
#: Dialog peers kept at most (``SourceGuard.peer``): far more media gateways than carriers
#: have, and a gateway naming a new address in every answer cannot grow the table.
_PEERS_MAX = 4096


@dataclass(frozen=True, slots=True)
class Screen:
    """A request answered before any state is kept: ``status`` once, or dropped (None)."""

    status: int | None
    why: str
    headers: tuple[tuple[str, str], ...] = ()


DROP_BLOCKED = Screen(None, "blocked")
DROP = Screen(None, "unknown_source")


def pike_share_of(rate: int, processes: int) -> int:
    """One worker's pike rate: ``rate`` split over ``processes``, rounded up (0 stays off)."""
    return -(-rate // processes)


class SourceGuard:
    """Blocks, pike, scanner User-Agents and stranger refusals for one switch process."""

    def __init__(
        self,
        security: SecurityConfig,
        *,
        customer: Callable[[str, int], bool] = lambda ip, port: False,
        gateways: frozenset[str] = frozenset(),
        blocks: Blocklist | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.blocks = blocks if blocks is not None else Blocklist()
        self._trusted: dict[str, float] = {}
        #: Where gateways' answers sent their dialogs (``peer``), until when.
        self._peers: dict[str, float] = {}
        self.pike = Pike(security.pike_rate, security.pike_window)
        #: How many processes one source's packets are spread over (``share_pike``).
        self.pike_share = 1
        self.refusals = RefusalCounters(security.log_interval, logger)
        #: Stateless 407s sent to addresses that are not yet customers.
        self.challenges = 0
        self.configure(security, customer, gateways)

    def configure(
        self,
        security: SecurityConfig,
        customer: Callable[[str, int], bool],
        gateways: frozenset[str],
        proxies: Callable[[str, int], bool] | None = None,
    ) -> None:
        """Take a new ``[security]`` and known sources (start and each reload).

        ``proxies`` tells a trusted proxy's address (``[server] trusted_proxies``): known,
        so never counted or blocked itself; the clients behind it are counted by
        ``forwarded`` and judged by ``screen`` with their own address.

        Counters, blocks and trusted addresses carry over; a changed pike rate applies from
        the next window.
        """
        self.security = security
        self.pike.rate = pike_share_of(security.pike_rate, self.pike_share)
        self.pike.window = security.pike_window
        self.refusals.interval = security.log_interval
        self._agents = tuple(a.lower() for a in security.drop_user_agents)
        self._customer_rule = customer
        # Addresses that passed digest are trusted under the old accounts: a reload that
        # removes or disables an account (or changes its password) must not keep them.
        self._trusted = {}
        self._peers = {}
        self._gateways = gateways
        self._proxies = proxies
        self._customer_cache: dict[tuple[str, int], bool] = {}

    def share_pike(self, processes: int) -> None:
        """Count pike in one of ``processes`` workers that split each source's packets.

        A request is handled by the worker its Call-ID names (``workers.steering``, with
        ``workers.handoff`` for what the kernel delivered elsewhere; a datagram with no
        Call-ID where it arrived), so each worker sees about its share of a flood: each
        blocks at ``pike_rate / processes`` (rounded up), and the block is shared, so a
        scanner spreading new Call-IDs over every worker is caught at about ``pike_rate`` in
        all. A source whose every request lands on one worker (one Call-ID retransmitted,
        or datagrams with none) is caught sooner, at that worker's share: pike counts unknown
        sources only, never a customer's or a gateway's traffic.
        """
        if processes < 1:
            raise ValueError(f"processes must be >= 1, not {processes}")
        self.pike_share = processes
        self.pike.rate = pike_share_of(self.security.pike_rate, processes)

    # -- who is known --------------------------------------------------------------------

    def is_account_address(self, ip: str, port: int) -> bool:
        """An address an account's ``ips`` match (cached until the next reload)."""
        key = (ip, port)
        known = self._customer_cache.get(key)
        if known is None:
            if len(self._customer_cache) >= _KNOWN_CACHE_MAX:
                self._customer_cache = {}
            known = self._customer_cache[key] = self._customer_rule(ip, port)
        return known

    def is_customer(self, ip: str, port: int, now: float) -> bool:
        """An account's address, or one that passed digest in the last ``TRUST_TIME``."""
        if self.is_account_address(ip, port):
            return True
        return bool(self._trusted) and self._trusted.get(ip, float("-inf")) > now

    def is_known(self, ip: str, port: int, now: float) -> bool:
        """A customer's address, a gateway's, a trusted proxy's or a gateway's dialog peer."""
        if ip in self._gateways or self.is_customer(ip, port, now):
            return True
        proxies = self._proxies
        return (proxies is not None and proxies(ip, port)) or self._is_peer(ip, now)

    def _is_peer(self, ip: str, now: float) -> bool:
        return bool(self._peers) and self._peers.get(ip, float("-inf")) > now

    def peer(self, ip: str) -> None:
        """A gateway's 2xx sent its dialog to ``ip`` (``proxy.dialog_target``: the media
        gateway behind a carrier's front door). Its packets are the carrier's (the 200s for
        the BYEs sent there, its own BYEs): known like a gateway's address for
        ``TRUST_TIME`` after its last answered call, so pike never blocks a carrier for
        hanging up calls. It places no calls: it is not a customer. A reload forgets them
        (the gateway that named one may be gone); the next answered call names it again.
        At most ``_PEERS_MAX``: the least recently named goes first."""
        peers = self._peers
        peers.pop(ip, None)  # to the end: the order is that of the last naming
        if len(peers) >= _PEERS_MAX:
            del peers[next(iter(peers))]
        peers[ip] = self.clock() + TRUST_TIME

    def trust(self, ip: str) -> None:
        """``ip`` passed digest authentication: a customer's for ``TRUST_TIME``."""
        now = self.clock()
        if len(self._trusted) >= _KNOWN_CACHE_MAX:
            self._trusted = {k: v for k, v in self._trusted.items() if v > now}
        self._trusted[ip] = now + TRUST_TIME

    # -- before parsing --------------------------------------------------------------------

    def packet(self, source: tuple[str, int]) -> bool:
        """Whether to parse a message from ``source`` at all (False: drop it, unseen)."""
        ip, port = source
        blocks = self.blocks
        if not len(blocks) and self.pike.rate <= 0:
            return True
        now = self.clock()
        if ip in blocks and blocks.is_blocked(ip, now) and not self.is_known(ip, port, now):
            if self.security.blocked_source == "drop":
                self.refusals.note(ip, "blocked", now)
                return False
            return True  # ``screen`` answers it 403
        if self.pike.rate > 0 and not self.is_known(ip, port, now) and self.pike.hit(ip, now):
            self.block(ip, "pike", now)
            return self.security.blocked_source != "drop"
        return True

    def forwarded(self, source: tuple[str, int]) -> None:
        """Pike for the client behind a trusted proxy (``Flow.client``): the proxy's packets
        are known and pass ``packet`` uncounted, so each request it forwards counts here
        for the client it names. A client blocked already is left to ``screen``."""
        if self.pike.rate <= 0:
            return
        ip, port = source
        now = self.clock()
        if self.is_known(ip, port, now):
            return
        if len(self.blocks) and self.blocks.is_blocked(ip, now):
            return
        if self.pike.hit(ip, now):
            self.block(ip, "pike", now)

    def block(self, ip: str, why: str, now: float | None = None) -> None:
        """Block ``ip`` for ``[security] block_time`` seconds (logged once per block)."""
        now = self.clock() if now is None else now
        if self.security.block_time <= 0:
            return
        self.pike.forget(ip)
        if not self.blocks.block(ip, now + self.security.block_time, now):
            # Full of live blocks (a spoofed flood): counted, not logged line by line.
            self.refusals.note(ip, "block_list_full", now)
            return
        logger.warning(
            "blocked %s for %gs: %s",
            ip,
            self.security.block_time,
            why,
            extra={"peer": ip, "block_reason": why},
        )

    # -- before any transaction --------------------------------------------------------------

    def screen(
        self,
        request: Request,
        source: tuple[str, int],
        *,
        has_credentials: Callable[[Request], bool],
        challenge: Callable[[], list[tuple[str, str]]] | None,
    ) -> Screen | None:
        """``None`` to handle ``request`` statefully, else how to refuse it statelessly.

        ``has_credentials`` tells whether an INVITE carries credentials for our realm;
        ``challenge`` gives the 407's header fields (None: no account can use digest alone).
        """
        ip, port = source
        now = self.clock()
        customer = self.is_customer(ip, port, now)
        proxies = self._proxies
        known = (
            customer
            or ip in self._gateways
            or (proxies is not None and proxies(ip, port))
            or self._is_peer(ip, now)
        )
        if not known and len(self.blocks) and self.blocks.is_blocked(ip, now):
            return self._refused(
                ip,
                DROP_BLOCKED if self.security.blocked_source == "drop" else Screen(403, "blocked"),
                now,
            )
        if self._agents and not known:
            agent = request.headers.get("User-Agent")
            if agent is not None and self.is_scanner(agent):
                # Dropped and counted, not blocked: one spoofed packet must not be able to
                # block an address (or grow the block list); pike blocks a real scanner
                # that keeps sending.
                return self._refused(ip, Screen(None, "scanner"), now)
        if request.method == "INVITE":
            # A call is a customer's business: a gateway's address places none.
            if customer:
                return None
            if challenge is not None:
                if has_credentials(request):
                    return None
                # Not a refusal: the first step of digest. Counted, but never logged.
                self.challenges += 1
                return Screen(407, "challenged", tuple(challenge()))
        elif known:
            return None
        if self.security.unknown_source == "drop":
            return self._refused(ip, DROP, now)
        return self._refused(ip, Screen(403, "unknown_source"), now)

    def is_scanner(self, agent: str) -> bool:
        low = agent.lower()
        return any(fragment in low for fragment in self._agents)

    def _refused(self, ip: str, screen: Screen, now: float) -> Screen:
        self.refusals.note(ip, screen.why, now)
        return screen


def gateway_addresses(hosts: list[str]) -> frozenset[str]:
    """The gateways' IP addresses as the transport reports a source (no brackets).

    A gateway named by a host name is not resolved here: its address is not known, so its
    traffic is counted by pike like a stranger's (documented in docs/security.md).
    """
    out: set[str] = set()
    for host in hosts:
        bare = host.strip("[]")
        try:
            out.add(str(ipaddress.ip_address(bare)))
        except ValueError:
            continue
    return frozenset(out)
