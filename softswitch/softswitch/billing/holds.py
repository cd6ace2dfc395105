"""What the meter needs of a counter of every process's credit holds on an account.

A billed account's calls may be carried by several processes: the workers of one node
(``workers.credit.WorkerCredit``, shared memory) or several nodes (``cluster.credit.
SharedCredit``, Redis). Each process's ``CreditBook`` holds its own calls' credit; the
counter holds the same amounts again where every process sees them, against a limit of the
account's funds (balance plus credit limit), so the reservations of every process together
never exceed what the account has. The meter (``billing.meter``) uses either through this
protocol, with one path for both. A counter that answers at once (shared memory:
:class:`ImmediateCreditHolds`) also takes a new call's first hold in the synchronous
admission itself, so a worker's admission never waits; Redis's is asked in the admission's
async step.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final, Protocol

__all__ = ["CreditHolds", "ImmediateCreditHolds", "later_released", "released_since"]

#: ``released`` totals are counters modulo 2**64 (a lifetime total in 64 bits).
_MODULUS: Final = 2**64


def released_since(now: int, seen: int) -> int:
    """What was released between two readings of an account's ``released`` total (``seen``
    the earlier): their difference modulo 2**64, right however often the counter wrapped
    as long as less than 2**63 nano-units were released in between."""
    return (now - seen) % _MODULUS


def later_released(a: int, b: int) -> int:
    """The later of two readings of one ``released`` total (modulo 2**64, as
    :func:`released_since`): never ``max``, which a wrapped counter would fool."""
    return a if released_since(a, b) < _MODULUS // 2 else b


class CreditHolds(Protocol):
    """One process's holds on the shared counters of its billed accounts (nano-units)."""

    #: Questions the counter did not answer (each refused a new call or left a slice local).
    errors: int

    def claimed(self, key: Hashable) -> int:
        """What the call ``key`` holds on the counter or has asked for."""
        ...

    def held(self, key: Hashable) -> int:
        """What the call ``key`` holds on the counter."""
        ...

    async def hold(self, key: Hashable, account_id: str, amount: int, funds: int) -> bool | None:
        """Hold ``amount`` more for the call if every process's holds on the account stay
        within ``funds``: True held, False refused (the credit is spent), None the counter
        did not answer (the caller fails closed: a new call is refused)."""
        ...

    def release(self, key: Hashable) -> None:
        """The call ended: give back all it holds."""
        ...

    async def settle(self) -> None:
        """Wait for the holds and releases in flight."""
        ...


class ImmediateCreditHolds(CreditHolds, Protocol):
    """A counter that answers at once, without I/O (the workers' shared memory), and keeps
    an ended call's debit held until it is committed to the ledger (``keep``,
    ``committed``), so that no process admits against a balance that does not show it yet:
    ``released`` counts the debits let go since, per account, and ``hold_checked`` says
    (None) when those could make the difference to a hold, so the caller reads the ledger
    first."""

    #: True: what tells the meter this counter answers at once (``billing.meter``).
    answers_at_once: bool

    def hold_now(self, key: Hashable, account_id: str, amount: int, funds: int) -> bool:
        """:meth:`CreditHolds.hold`, answered now: True held, False refused."""
        ...

    def hold_checked(
        self, key: Hashable, account_id: str, amount: int, funds: int, seen: int | None
    ) -> tuple[bool | None, int]:
        """:meth:`hold_now`, or None when the debits released since ``seen`` could make
        the difference; and the account's ``released`` now."""
        ...

    def keep(self, key: Hashable, debit: int) -> int:
        """The call ended with ``debit``: keep that much held until :meth:`committed`."""
        ...

    def committed(self, debits: list[tuple[str, int]]) -> None:
        """The kept debits are in the ledger: let them go (counted in ``released``)."""
        ...

    def released(self, account_ids: list[str]) -> dict[str, int]:
        """Per account: the debits let go since the start (a counter modulo 2**64:
        :func:`released_since`)."""
        ...

    def account_held(self, account_id: str) -> int:
        """What every process's calls of the account hold together."""
        ...

    def take_over(self) -> int:
        """This process's share as a dead predecessor (same worker index) left it, let go
        and counted in ``released``, once its calls are settled in the ledger."""
        ...
