"""The switch's mutable runtime state: calls in progress, call rates, gateway health, blocks.

Interface note: ``account_admit``/``gateway_admit`` return ``None`` when admitted and the
name of the limit hit otherwise (not a bool, so the refusal can say which limit).

Everything else a call consults is immutable (``Snapshot``); this is the one place that
changes as calls come and go. It is owned by the proxy engine and touched from the event
loop only (no locks). It is keyed by account and gateway *ids*, not objects, so counters
survive a configuration reload: a call admitted under the old snapshot is released under the
new one.

``now`` is seconds on any monotonic clock the engine keeps consistent (``loop.time()`` or
``time.monotonic()``); nothing here reads a clock.

Admission is check-and-take in one call: ``account_admit``/``gateway_admit`` either count the
call (and return None) or return which limit stopped it (``"max_calls"``/``"capacity"`` or
``"max_cps"``) without counting it. Every successful admit must be paired with exactly one
``*_release`` when that call (or that gateway attempt) ends.

Calls per second are counted over a sliding one-second window of admitted calls: a limit of
N admits at most N calls in any 1-second interval. Refused calls do not use up the window.

Operators' run-time overrides live here too (``set_gateway_disabled``,
``set_account_disabled``, from the management API): like the counters they are keyed by
id, so they survive a SIGHUP reload; like all of this state they do not survive a restart,
where the file rules again. An override can only take away: a gateway or account the file
disables stays disabled (a gateway disabled in the file is not even in the routing tables).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from ..security.pike import Blocklist

__all__ = ["AccountLimitHit", "GatewayLimitHit", "LiveState"]

AccountLimitHit = Literal["max_calls", "max_cps"]
GatewayLimitHit = Literal["capacity", "max_cps"]

_CPS_WINDOW = 1.0
#: Auth-failure entries kept before expired ones are swept (bounds memory under a scan).
_SWEEP_AT = 4096


@dataclass(slots=True)
class _Counter:
    calls: int = 0
    starts: deque[float] = field(default_factory=deque)

    def rate(self, now: float) -> int:
        """Admissions within the last second (expired ones are dropped)."""
        starts = self.starts
        while starts and starts[0] <= now - _CPS_WINDOW:
            starts.popleft()
        return len(starts)

    def limit_hit(
        self, now: float, max_calls: int | None, max_cps: int | None
    ) -> Literal["calls", "cps"] | None:
        """Which limit one more call would break now (None: room)."""
        if max_calls is not None and self.calls >= max_calls:
            return "calls"
        if max_cps is not None and self.rate(now) >= max_cps:
            return "cps"
        return None

    def admit(self, now: float) -> None:
        self.calls += 1
        self.starts.append(now)

    def release(self, what: str) -> None:
        if self.calls <= 0:
            raise RuntimeError(f"{what} released more calls than admitted")
        self.calls -= 1


class LiveState:
    """Counters per account and gateway, gateway up/down, auth failures and blocks per IP.

    ``blocks`` is shared with the switch's ``security.SourceGuard``, so an address blocked
    for failed authentication is dropped before parsing like one blocked by pike.
    """

    def __init__(self, blocks: Blocklist | None = None) -> None:
        self._accounts: dict[str, _Counter] = {}
        self._gateways: dict[str, _Counter] = {}
        self._down: set[str] = set()
        #: Ids an operator disabled at run time (``softswitch.management``).
        self._gateways_off: set[str] = set()
        self._accounts_off: set[str] = set()
        #: Gateway id -> ids of the active alarms that take it out (``softswitch.alarms``).
        self._gateways_alarmed: dict[str, set[str]] = {}
        #: IP -> times of its recent authentication failures.
        self._auth: dict[str, deque[float]] = {}
        self.blocks = blocks if blocks is not None else Blocklist()
        self._sweep_at = _SWEEP_AT

    # -- accounts ----------------------------------------------------------------------

    def account_calls(self, account_id: str) -> int:
        c = self._accounts.get(account_id)
        return 0 if c is None else c.calls

    def account_rate(self, account_id: str, now: float) -> int:
        c = self._accounts.get(account_id)
        return 0 if c is None else c.rate(now)

    def account_admit(
        self,
        account_id: str,
        now: float,
        *,
        max_calls: int | None = None,
        max_cps: int | None = None,
    ) -> AccountLimitHit | None:
        """Count a new call for the account unless a limit stops it (None = admitted)."""
        c = self._accounts.setdefault(account_id, _Counter())
        hit = c.limit_hit(now, max_calls, max_cps)
        if hit is not None:
            return "max_calls" if hit == "calls" else "max_cps"
        c.admit(now)
        return None

    def account_release(self, account_id: str) -> None:
        """The end of a call admitted by ``account_admit``."""
        self._accounts.get(account_id, _Counter()).release(f"account {account_id!r}")

    # -- gateways ----------------------------------------------------------------------

    def gateway_calls(self, gateway_id: str) -> int:
        c = self._gateways.get(gateway_id)
        return 0 if c is None else c.calls

    def gateway_rate(self, gateway_id: str, now: float) -> int:
        c = self._gateways.get(gateway_id)
        return 0 if c is None else c.rate(now)

    def gateway_has_room(
        self,
        gateway_id: str,
        now: float,
        *,
        capacity: int | None = None,
        max_cps: int | None = None,
    ) -> GatewayLimitHit | None:
        """Which limit a new attempt would hit now, without counting it (None = room)."""
        c = self._gateways.get(gateway_id)
        hit = None if c is None else c.limit_hit(now, capacity, max_cps)
        if hit is None:
            return None
        return "capacity" if hit == "calls" else "max_cps"

    def gateway_admit(
        self,
        gateway_id: str,
        now: float,
        *,
        capacity: int | None = None,
        max_cps: int | None = None,
    ) -> GatewayLimitHit | None:
        """Count an attempt on the gateway unless a limit stops it (None = admitted)."""
        hit = self.gateway_has_room(gateway_id, now, capacity=capacity, max_cps=max_cps)
        if hit is not None:
            return hit
        self._gateways.setdefault(gateway_id, _Counter()).admit(now)
        return None

    def gateway_release(self, gateway_id: str) -> None:
        """The end of an attempt admitted by ``gateway_admit`` (failed or hung up)."""
        self._gateways.get(gateway_id, _Counter()).release(f"gateway {gateway_id!r}")

    def mark_gateway(self, gateway_id: str, up: bool) -> None:
        """The OPTIONS prober's verdict. Gateways are up until marked down."""
        if up:
            self._down.discard(gateway_id)
        else:
            self._down.add(gateway_id)

    def gateway_is_up(self, gateway_id: str) -> bool:
        return gateway_id not in self._down

    # -- operators' run-time overrides -------------------------------------------------

    def set_gateway_disabled(self, gateway_id: str, disabled: bool) -> bool:
        """An operator's disable (or its lifting); whether anything changed."""
        return _toggle(self._gateways_off, gateway_id, disabled)

    def gateway_disabled(self, gateway_id: str) -> bool:
        """Disabled by an operator at run time (the file's ``enabled`` is the snapshot's)."""
        return gateway_id in self._gateways_off

    def set_account_disabled(self, account_id: str, disabled: bool) -> bool:
        """An operator's disable (or its lifting); whether anything changed."""
        return _toggle(self._accounts_off, account_id, disabled)

    def account_disabled(self, account_id: str) -> bool:
        return account_id in self._accounts_off

    # -- alarms' disable action --------------------------------------------------------

    def set_gateway_alarm(self, gateway_id: str, rule_id: str, active: bool) -> bool:
        """An alarm with action ``disable`` raised (``active``) or cleared on the gateway;
        whether anything changed. Kept apart from the operator's override: an alarm that
        clears never lifts an operator's disable, nor an operator's enable an alarm's."""
        rules = self._gateways_alarmed.get(gateway_id)
        if active:
            if rules is None:
                rules = self._gateways_alarmed[gateway_id] = set()
            changed = rule_id not in rules
            rules.add(rule_id)
            return changed
        if rules is None or rule_id not in rules:
            return False
        rules.discard(rule_id)
        if not rules:
            del self._gateways_alarmed[gateway_id]
        return True

    def gateway_alarm(self, gateway_id: str) -> str | None:
        """The id of an active alarm that takes the gateway out (the first by name), or None."""
        rules = self._gateways_alarmed.get(gateway_id)
        return min(rules) if rules else None

    # -- authentication failures -------------------------------------------------------

    def note_auth_failure(
        self,
        ip: str,
        now: float,
        *,
        limit: int = 5,
        window: float = 60.0,
        block_for: float = 300.0,
    ) -> bool:
        """Record a failed authentication from ``ip``; True if this one blocked it.

        ``limit`` failures within ``window`` seconds block the IP for ``block_for`` seconds.
        """
        if ip not in self._auth and len(self._auth) >= self._sweep_at:
            self._sweep(now, window)
        times = self._auth.setdefault(ip, deque())
        times.append(now)
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= limit and block_for > 0:
            self.blocks.block(ip, now + block_for, now)
            del self._auth[ip]
            return True
        return False

    def note_auth_success(self, ip: str) -> None:
        """A success forgives earlier failures (a phone that got its password fixed)."""
        self._auth.pop(ip, None)

    def is_blocked(self, ip: str, now: float) -> bool:
        return self.blocks.is_blocked(ip, now)

    def unblock(self, ip: str) -> None:
        """An operator's override."""
        self._auth.pop(ip, None)
        self.blocks.unblock(ip)

    def _sweep(self, now: float, window: float) -> None:
        self._auth = {ip: t for ip, t in self._auth.items() if t and t[-1] > now - window}
        # Doubling: a table of recent failures (a scan from many sources) is swept again
        # only when it has grown, so each failure costs O(1) amortised.
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._auth))


def _toggle(ids: set[str], key: str, member: bool) -> bool:
    if (key in ids) == member:
        return False
    if member:
        ids.add(key)
    else:
        ids.discard(key)
    return True
