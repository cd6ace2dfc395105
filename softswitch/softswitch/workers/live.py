"""``LiveState`` for several worker processes: the same API, its state in shared memory.

The call stages (``softswitch.call``) ask ``LiveState`` synchronously whether a call fits an
account's or a gateway's limits; with several workers the answer must count every worker's
calls. :class:`SharedLiveState` keeps what ``LiveState`` keeps in two :class:`SharedTable`
s created by the supervisor before the fork: one for accounts and gateways, one for source
IPs (authentication failures and blocks), and answers each question under the table's lock,
so the limits hold exactly as with one process:

* ``max_calls`` / ``capacity``: the sum of the calls every worker counts for the id; a call
  is released by the worker that admitted it. When a worker dies the supervisor zeroes that
  worker's counts before it starts the replacement (its calls died with it).
* ``max_cps``: at most N admissions in any one-second interval, as ``LiveState``: the ring
  keeps the last admission times per id, and a new call is refused when the N-th most
  recent is less than a second old. The ring is sized at start for twice the highest
  ``max_cps`` of the configuration (at least :data:`CPS_RING`), so every limit is exact; a
  reload that raises one past the ring is refused (:meth:`SharedState.refusal`).
* auth failures: the last failure times per IP, a ring sized likewise from
  ``[defaults] auth_fail_limit`` (at least :data:`AUTH_RING`); a block is a deadline in the
  same slot, seen by every worker's ``SourceGuard`` (pike blocks too; pike's counting itself
  stays per worker, see the docs).
* gateway up/down (the prober runs in one worker), operators' overrides and alarms'
  disables: flags and alarm ids in the id's slot.

Time: ``now`` is ``time.monotonic()`` / ``loop.time()``, one clock for the whole host, so the
windows of different workers compare.
"""

from __future__ import annotations

import logging
from typing import Final

from softswitch.call.live import AccountLimitHit, GatewayLimitHit, LiveState
from softswitch.config import Account, Config, Gateway
from softswitch.security.pike import Blocklist

from .credit import credit_key
from .registrations import BindingJournal
from .reload_acks import ReloadAcks
from .running_config import RunningConfig
from .table import ProcessLock, SharedTable, Slot, digest

__all__ = ["AUTH_RING", "CPS_RING", "SharedBlocklist", "SharedLiveState", "SharedState"]

logger = logging.getLogger("softswitch.workers")

#: Admission times kept per account and gateway at least (``SharedState.for_config``).
CPS_RING: Final = 1024
#: Authentication failure times kept per source IP at least.
AUTH_RING: Final = 64
#: Slots of the source IP table (failing authentication or blocked). It holds at most three
#: quarters of that many sources (``SharedTable.capacity``); a new one past that makes room
#: (:func:`_make_room`): it forgets the sources idle for the failure window, then the oldest
#: non-blocked ones, then, only if every source is blocked, the blocks that end first. A
#: new failure or block is always recorded.
IP_SLOTS: Final = 16384
#: The failure window assumed until a failure names one (``auth_fail_window``'s default).
_DEFAULT_WINDOW: Final = 60.0

_CPS_WINDOW: Final = 1.0
_DOWN: Final = 1
_GATEWAY_OFF: Final = 2
_ACCOUNT_OFF: Final = 4
#: A gateway with an alarm's disable in force (its ids are in the slot's alarm text): read
#: without the lock, so the usual gateway with none costs no lock.
_ALARMED: Final = 8


class SharedState:
    """The tables and their lock, made by the supervisor before the fork."""

    def __init__(
        self, *, workers: int, ids: int, cps_ring: int = CPS_RING, auth_ring: int = AUTH_RING
    ) -> None:
        """``ids``: accounts plus gateways of the configuration at start. The table has
        slots for four times that, at least 1024, and holds three quarters of them
        (``SharedTable.capacity``): reloads may add ids, and free the slots of those they
        remove (:meth:`forget_absent`). ``cps_ring`` and ``auth_ring``: the highest
        ``max_cps`` and ``auth_fail_limit`` counted exactly."""
        self.workers = workers
        self.lock = ProcessLock()
        slots = max(1024, 4 * ids)
        self.counters = SharedTable(slots, workers=workers, ring=cps_ring, lock=self.lock)
        self.ips = SharedTable(IP_SLOTS, workers=1, ring=auth_ring, lock=self.lock)
        #: Billed accounts' credit held by every worker's calls (``workers.credit``): an
        #: amount per worker, no ring to speak of. Sized as the counters, for accounts.
        self.credit = SharedTable(slots, workers=workers, ring=1, lock=self.lock, amounts=True)
        #: Per billed account, the debits each worker kept held until committed and then
        #: released (``WorkerCredit.committed``), and the columns replacements took over
        #: (``WorkerCredit.take_over``): counters modulo 2**64, never zeroed nor freed.
        #: A dead worker's credit column is left alone here: its replacement takes it over.
        self.released = SharedTable(slots, workers=workers, ring=1, lock=self.lock, amounts=True)
        #: Registered contacts' changes, for the other workers (``workers.registrations``).
        self.bindings = BindingJournal(self.lock)
        #: What the workers run since their last reload, for a restarted one.
        self.running = RunningConfig(self.lock)
        #: SIGHUPs each worker has finished reloading for (the supervisor's check).
        self.reload_acks = ReloadAcks(workers)

    @classmethod
    def for_config(cls, config: Config, *, workers: int) -> SharedState:
        """Sized for ``config`` with room to grow: twice its highest ``max_cps`` and
        ``auth_fail_limit`` (the rings' memory is touched only as calls fill it)."""
        ids = len(config.accounts) + len(config.gateways)
        cps = max((item.max_cps or 0 for item in _limited(config)), default=0)
        return cls(
            workers=workers,
            ids=ids,
            cps_ring=max(CPS_RING, 2 * cps),
            auth_ring=max(AUTH_RING, 2 * config.defaults.auth_fail_limit),
        )

    def refusal(self, config: Config) -> str | None:
        """Why a reload to ``config`` would outgrow what was sized at start (None: it fits):
        a limit the rings cannot count, or more ids than the table holds."""
        ring = self.counters.ring
        for kind, items in (("accounts", config.accounts), ("gateways", config.gateways)):
            for item in items:
                if item.max_cps is not None and item.max_cps > ring:
                    return (
                        f"{kind} {item.id}: max_cps {item.max_cps} is above {ring}, the most"
                        " the workers' shared window was sized for at start; restart to raise it"
                    )
        limit = config.defaults.auth_fail_limit
        if limit > self.ips.ring:
            return (
                f"defaults.auth_fail_limit: {limit} is above {self.ips.ring}, the most the"
                " workers' shared failure window was sized for at start; restart to raise it"
            )
        keys = _keys(config)
        wanted = _digests(keys)
        with self.lock:
            table = self.counters
            new = sum(table.find(key) is None for key in keys)
            kept = sum(1 for slot in table.used() if slot.key in wanted or slot.calls())
        if kept + new > table.capacity:
            return (
                f"accounts and gateways: {len(keys)} ids (with those still in calls) do not"
                f" fit the workers' shared table sized at start for {table.capacity};"
                " restart to size it for this configuration"
            )
        return self.credit_refusal(config)

    def credit_refusal(self, config: Config) -> str | None:
        """Why ``config``'s billed accounts would not fit the credit table (None: they do)."""
        billed = [credit_key(a.id) for a in config.accounts if a.billed]
        wanted = _digests(billed)
        with self.lock:
            table = self.credit
            new = sum(table.find(key) is None for key in billed)
            kept = sum(1 for slot in table.used() if slot.key in wanted or slot.amount())
            released = self.released  # its slots are never freed
            more = sum(released.find(key) is None for key in billed) + released.entries
        if kept + new > table.capacity or more > released.capacity:
            return (
                f"accounts: {len(billed)} billed accounts (with those still holding credit,"
                " and every account billed since the start) do not fit the workers' shared"
                f" credit table sized at start for {table.capacity}; restart to size it"
                " for this configuration"
            )
        return None

    def forget_absent(self, config: Config) -> int:
        """Free the slots of ids ``config`` no longer has and no worker counts a call for
        (a reload removed them); how many. Their flags (down, disabled) go with them. The
        tables are then rebuilt without the tombstones the frees left (once per reload,
        O(slots)): :meth:`refusal` counts live ids only, and a table whose live entries and
        tombstones filled it would refuse the new ids of a configuration it accepted."""
        wanted = _digests(_keys(config))
        freed = 0
        with self.lock:
            table = self.counters
            for slot in list(table.used()):
                if slot.key not in wanted and slot.calls() == 0:
                    table.delete(slot)
                    freed += 1
            billed = _digests([credit_key(a.id) for a in config.accounts if a.billed])
            for slot in list(self.credit.used()):
                if slot.key not in billed and slot.amount() == 0:
                    self.credit.delete(slot)
            for compact in (table, self.credit):
                if compact.tombstones:
                    compact.rebuild(list(compact.used()))
        return freed

    def release_worker(self, worker: int) -> int:
        """A dead worker's calls, released (the supervisor, before restarting it)."""
        with self.lock:
            return self.counters.zero_worker(worker)


def _limited(config: Config) -> list[Account | Gateway]:
    return [*config.accounts, *config.gateways]


def _keys(config: Config) -> list[str]:
    return [_account(a.id) for a in config.accounts] + [_gateway(g.id) for g in config.gateways]


def _digests(keys: list[str]) -> set[bytes]:
    return {digest(key) for key in keys}


def _account(account_id: str) -> str:
    return "a\0" + account_id


def _gateway(gateway_id: str) -> str:
    return "g\0" + gateway_id


class SharedBlocklist(Blocklist):
    """``Blocklist`` with its deadlines in the shared IP table (every worker sees a block)."""

    __slots__ = ("_table", "window")

    def __init__(self, table: SharedTable) -> None:
        super().__init__(max_blocks=table.slots)
        self._table = table
        #: The authentication failure window, as the last failure noted here named it:
        #: what a block (pike's) that needs room keeps of the other sources' failures.
        self.window = _DEFAULT_WINDOW

    def __len__(self) -> int:
        return self._table.blocked_hint

    def __contains__(self, source: object) -> bool:
        if not isinstance(source, str) or not self._table.blocked_hint:
            return False
        with self._table.lock:
            slot = self._table.find(source)
            return slot is not None and slot.until != 0.0

    def block(self, source: str, until: float, now: float) -> bool:
        table = self._table
        with table.lock:
            slot = _ip_slot(table, source, now, self.window)
            if slot.until == 0.0:
                table.add_blocked(1)
            if until > slot.until:
                slot.until = until
            return True

    def is_blocked(self, source: str, now: float) -> bool:
        table = self._table
        if not table.blocked_hint:
            return False
        with table.lock:
            slot = table.find(source)
            if slot is None or slot.until == 0.0:
                return False
            if now < slot.until:
                return True
            _lift(table, slot)
            return False

    def unblock(self, source: str) -> bool:
        table = self._table
        with table.lock:
            slot = table.find(source)
            if slot is None or slot.until == 0.0:
                return False
            _lift(table, slot)
            return True

    def blocked(self, now: float) -> dict[str, float]:
        table = self._table
        if not table.blocked_hint:
            return {}
        with table.lock:
            return {s.label: s.until - now for s in table.used() if s.until > now}


def _lift(table: SharedTable, slot: Slot) -> None:
    slot.until = 0.0
    table.add_blocked(-1)
    if slot.is_idle():
        table.delete(slot)


def _ip_slot(table: SharedTable, ip: str, now: float, window: float) -> Slot:
    """``ip``'s slot, made if need be: a full table makes room first (:func:`_make_room`),
    keeping failures within ``window`` seconds (``auth_fail_window``) before older ones."""
    slot = table.find(ip, create=True)
    if slot is None:
        _make_room(table, now, window)
        slot = table.find(ip, create=True)
        assert slot is not None, "room was made"
    slot.label = ip
    return slot


def _make_room(table: SharedTable, now: float, window: float) -> None:
    """Rebuild a full IP table with at most five eighths of its slots used, so that the
    next slots/8 new sources (at least) find room without another rebuild: each rebuild is
    O(slots), so a new source costs O(1) amortised, never a scan of the table per packet.

    Goes first what holds nothing: no block in force and no failure within ``window``.
    Then the non-blocked sources whose latest failure is oldest; then, only when every
    source left is blocked, the blocks that end first (a new block is always recorded).
    """
    target = table.slots * 5 // 8
    blocked: list[tuple[float, Slot]] = []
    failing: list[tuple[float, Slot]] = []
    idle = 0
    for slot in table.used():
        if slot.until > now:
            blocked.append((slot.until, slot))
            continue
        newest = slot.nth_newest(1)
        if newest is None or newest <= now - window:
            idle += 1
            continue
        failing.append((newest, slot))
    evicted = max(0, len(blocked) + len(failing) - target)
    if evicted:
        failing.sort(key=lambda pair: pair[0])
        blocked.sort(key=lambda pair: pair[0])
        from_failing = min(evicted, len(failing))
        failing = failing[from_failing:]
        blocked = blocked[evicted - from_failing :]
        logger.warning(
            "shared IP table full (%d slots): forgot %d sources with recent failures"
            " and %d blocks ending first",
            table.slots,
            from_failing,
            evicted - from_failing,
        )
    table.rebuild([slot for _, slot in failing] + [slot for _, slot in blocked])
    logger.info("shared IP table rebuilt: %d idle sources forgotten", idle)


class SharedLiveState(LiveState):
    """``LiveState`` whose state every worker shares; ``worker`` is this process's index."""

    def __init__(self, shared: SharedState, worker: int) -> None:
        super().__init__(SharedBlocklist(shared.ips))
        self._shared = shared
        self._table = shared.counters
        self._ips = shared.ips
        self._lock = shared.lock
        self._worker = worker
        #: key -> (slot offset, key digest) for the lock-free flag reads (``_flag``).
        self._places: dict[str, tuple[int, bytes]] = {}
        #: key -> the table's generation when the key had no slot (``_flag``).
        self._absent: dict[str, int] = {}

    # -- accounts ----------------------------------------------------------------------

    def account_calls(self, account_id: str) -> int:
        with self._lock:
            slot = self._table.find(_account(account_id))
            return 0 if slot is None else slot.calls()

    def account_rate(self, account_id: str, now: float) -> int:
        with self._lock:
            slot = self._table.find(_account(account_id))
            return 0 if slot is None else slot.times_after(now - _CPS_WINDOW)

    def account_admit(
        self,
        account_id: str,
        now: float,
        *,
        max_calls: int | None = None,
        max_cps: int | None = None,
    ) -> AccountLimitHit | None:
        with self._lock:
            slot = self._slot(_account(account_id))
            hit = _limit_hit(slot, now, max_calls, max_cps)
            if hit is not None:
                return "max_calls" if hit == "calls" else "max_cps"
            slot.add_calls(self._worker, 1)
            slot.push_time(now)
            return None

    def account_release(self, account_id: str) -> None:
        self._release(_account(account_id), f"account {account_id!r}")

    # -- gateways ----------------------------------------------------------------------

    def gateway_calls(self, gateway_id: str) -> int:
        with self._lock:
            slot = self._table.find(_gateway(gateway_id))
            return 0 if slot is None else slot.calls()

    def gateway_rate(self, gateway_id: str, now: float) -> int:
        with self._lock:
            slot = self._table.find(_gateway(gateway_id))
            return 0 if slot is None else slot.times_after(now - _CPS_WINDOW)

    def gateway_has_room(
        self,
        gateway_id: str,
        now: float,
        *,
        capacity: int | None = None,
        max_cps: int | None = None,
    ) -> GatewayLimitHit | None:
        if capacity is None and max_cps is None:
            return None  # nothing to read: no lock
        with self._lock:
            slot = self._table.find(_gateway(gateway_id))
            hit = None if slot is None else _limit_hit(slot, now, capacity, max_cps)
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
        with self._lock:
            slot = self._slot(_gateway(gateway_id))
            hit = _limit_hit(slot, now, capacity, max_cps)
            if hit is not None:
                return "capacity" if hit == "calls" else "max_cps"
            slot.add_calls(self._worker, 1)
            slot.push_time(now)
            return None

    def gateway_release(self, gateway_id: str) -> None:
        self._release(_gateway(gateway_id), f"gateway {gateway_id!r}")

    def mark_gateway(self, gateway_id: str, up: bool) -> None:
        with self._lock:
            self._slot(_gateway(gateway_id)).set_flag(_DOWN, not up)

    def gateway_is_up(self, gateway_id: str) -> bool:
        return not self._flag(_gateway(gateway_id), _DOWN)

    # -- operators' run-time overrides -------------------------------------------------

    def set_gateway_disabled(self, gateway_id: str, disabled: bool) -> bool:
        with self._lock:
            return self._slot(_gateway(gateway_id)).set_flag(_GATEWAY_OFF, disabled)

    def gateway_disabled(self, gateway_id: str) -> bool:
        return self._flag(_gateway(gateway_id), _GATEWAY_OFF)

    def set_account_disabled(self, account_id: str, disabled: bool) -> bool:
        with self._lock:
            return self._slot(_account(account_id)).set_flag(_ACCOUNT_OFF, disabled)

    def account_disabled(self, account_id: str) -> bool:
        return self._flag(_account(account_id), _ACCOUNT_OFF)

    # -- alarms' disable action --------------------------------------------------------

    def set_gateway_alarm(self, gateway_id: str, rule_id: str, active: bool) -> bool:
        with self._lock:
            slot = self._slot(_gateway(gateway_id))
            rules = slot.alarms
            if (rule_id in rules) == active:
                return False
            if active:
                rules.add(rule_id)
            else:
                rules.discard(rule_id)
            slot.alarms = rules
            slot.set_flag(_ALARMED, bool(rules))
            return True

    def gateway_alarm(self, gateway_id: str) -> str | None:
        key = _gateway(gateway_id)
        if not self._flag(key, _ALARMED):
            return None
        with self._lock:
            slot = self._table.find(key)
            rules = set() if slot is None else slot.alarms
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
        table = self._ips
        blocks = self.blocks
        if isinstance(blocks, SharedBlocklist):
            blocks.window = window
        with self._lock:
            slot = _ip_slot(table, ip, now, window)
            slot.push_time(now)
            if slot.times_after(now - window) >= limit and block_for > 0:
                slot.clear_times()
                if slot.until == 0.0:
                    table.add_blocked(1)
                slot.until = max(slot.until, now + block_for)
                return True
            return False

    def note_auth_success(self, ip: str) -> None:
        if not self._ips.entries:
            return
        with self._lock:
            slot = self._ips.find(ip)
            if slot is not None:
                slot.clear_times()
                if slot.is_idle():
                    self._ips.delete(slot)

    def unblock(self, ip: str) -> None:
        with self._lock:
            slot = self._ips.find(ip)
            if slot is not None:
                slot.clear_times()
        self.blocks.unblock(ip)

    # -- internals ---------------------------------------------------------------------

    def _slot(self, key: str) -> Slot:
        slot = self._table.find(key, create=True)
        if slot is None:  # a reload that would not fit is refused (SharedState.refusal)
            raise RuntimeError(
                f"the shared table of accounts and gateways is full ({self._table.capacity}"
                " ids): restart the switch to size it for the configuration"
            )
        return slot

    def _flag(self, key: str, bit: int) -> bool:
        # Asked several times per call (disabled? alarmed? up?): read without the lock at
        # the slot's remembered place (``SharedTable.flags_at``: the key is checked around
        # the read); looked up under the lock the first time and when a reload moved it.
        # A key without a slot (a gateway no call has used yet) has no flags: so is it
        # while the table's generation, read without the lock too, has not moved.
        place = self._places.get(key)
        if place is not None:
            flags = self._table.flags_at(*place)
            if flags is not None:
                return bool(flags & bit)
        elif self._absent.get(key) == self._table.generation:
            return False
        with self._lock:
            slot = self._table.find(key)
            if slot is None:
                self._places.pop(key, None)
                self._absent[key] = self._table.generation
                return False
            self._absent.pop(key, None)
            self._places[key] = (slot.offset, digest(key))
            return slot.flag(bit)

    def _release(self, key: str, what: str) -> None:
        with self._lock:
            slot = self._table.find(key)
            if slot is None or slot.worker_calls(self._worker) <= 0:
                raise RuntimeError(f"{what} released more calls than admitted")
            slot.add_calls(self._worker, -1)


def _limit_hit(slot: Slot, now: float, max_calls: int | None, max_cps: int | None) -> str | None:
    """Which limit one more call would break now (None: room), as ``LiveState``'s."""
    if max_calls is not None and slot.calls() >= max_calls:
        return "calls"
    if max_cps is not None:
        if max_cps <= 0:
            return "cps"
        if max_cps > slot.ring:  # never sized so (SharedState.refusal): hold the ring's
            _warn_ring(max_cps, slot.ring)
            max_cps = slot.ring
        nth = slot.nth_newest(max_cps)
        if nth is not None and nth > now - _CPS_WINDOW:
            return "cps"
    return None


_warned: set[tuple[int, int]] = set()


def _warn_ring(max_cps: int, ring: int) -> None:
    """A ``max_cps`` the window cannot count: enforced at the ring's size (stricter, never
    looser), said once per value."""
    if (max_cps, ring) not in _warned:
        _warned.add((max_cps, ring))
        logger.error(
            "max_cps %d is above %d, the most the shared window counts: %d a second enforced",
            max_cps,
            ring,
            ring,
        )
