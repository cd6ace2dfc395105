"""The limits stage: may this account place this call now?

Checked in this order, the first failure wins:

=========================  ======================  =========================================
check                      end reason              answer
=========================  ======================  =========================================
account ``enabled``        ``account_disabled``    403, Q.850 21 (the file's, or an operator's
                                                   at run time: ``LiveState``)
``deny`` prefixes          ``forbidden_destination`` 403, Q.850 21 (deny wins over allow)
``allow`` prefixes         ``forbidden_destination`` 403 when ``allow`` is set and none match
``max_calls``              ``limit_exceeded``      503, Q.850 34
``max_cps``                ``limit_exceeded``      503, Q.850 34
=========================  ======================  =========================================

Limits answer 503 rather than 486: a limit is the switch's capacity for that customer, not
the callee being busy, and a customer's own switch should fail over to another carrier on
503 (it must not on 486).

``number`` is the *normalised* number (see ``normalise``): the lists are written as E.164
digits. When the checks pass, the call is counted against the account in ``live`` and the
engine must call ``live.account_release(account.id)`` exactly once when the call ends.

With ``[server] shared_state`` the same ``max_calls`` and ``max_cps`` also hold across every
node sharing that Redis (``softswitch.cluster.admission``): this node's count stays the
first gate, and a call it passes is then checked against every node's. Either refusal is
the same 503 ``limit_exceeded`` (:func:`shared_refusal` words the second).
"""

from __future__ import annotations

from ..config import Account
from .live import LiveState
from .refusal import EndReason, Refusal, refuse

__all__ = ["check_destination", "check_limits", "shared_refusal"]


def check_destination(
    account: Account, number: str, live: LiveState | None = None
) -> Refusal | None:
    """Enabled and the allow/deny prefix lists (no counting): for ``softswitch route`` too,
    which has no ``live`` state (the management API's route explanation has)."""
    if not account.enabled:
        return refuse(EndReason.ACCOUNT_DISABLED, f"account {account.id} is disabled")
    if live is not None and live.account_disabled(account.id):
        detail = f"account {account.id} is disabled by an operator"
        return refuse(EndReason.ACCOUNT_DISABLED, detail)
    for prefix in account.deny:
        if number.startswith(prefix):
            return refuse(EndReason.FORBIDDEN_DESTINATION, f"{number} matches deny prefix {prefix}")
    if account.allow and not any(number.startswith(p) for p in account.allow):
        return refuse(EndReason.FORBIDDEN_DESTINATION, f"{number} matches no allow prefix")
    return None


def check_limits(account: Account, number: str, live: LiveState, now: float) -> Refusal | None:
    """None when the call may proceed (and is now counted), else the refusal."""
    refusal = check_destination(account, number, live)
    if refusal is not None:
        return refusal
    hit = live.account_admit(account.id, now, max_calls=account.max_calls, max_cps=account.max_cps)
    return _limit_refusal(account, hit, "")


def shared_refusal(account: Account, hit: str) -> Refusal | None:
    """The refusal for a limit every node's calls together reached (``hit``: ``max_calls``
    or ``max_cps``; anything else is no refusal)."""
    return _limit_refusal(account, hit, " across nodes")


def _limit_refusal(account: Account, hit: str | None, where: str) -> Refusal | None:
    if hit == "max_calls":
        return refuse(
            EndReason.LIMIT_EXCEEDED, f"account {account.id}: max_calls {account.max_calls}{where}"
        )
    if hit == "max_cps":
        return refuse(
            EndReason.LIMIT_EXCEEDED, f"account {account.id}: max_cps {account.max_cps}{where}"
        )
    return None
