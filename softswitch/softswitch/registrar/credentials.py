"""What a binding was registered under: a fingerprint of the account's registering
credentials, judged against the configuration in force.

A reload drops the bindings of an account it removes, disables, takes ``register`` away
from, or gives a new username or password (rotating a leaked password must cut off the
devices registered with it). With several workers a dropped binding could come back: a
worker that restarts, or falls behind and re-reads the table, replays the journal of
changes, which still holds the REGISTER that made it; and SIGHUP reaches the workers at
slightly different moments, so a worker not yet reloaded may accept the old password while
the others already run the new one. So every binding carries the fingerprint of the
credentials its REGISTER passed (:attr:`Binding.credentials`), and every process judges
each binding against its *own* configuration when it looks one up: a binding whose
fingerprint is not that of the account as configured now routes no call, authorises none
and trusts no source, wherever and whenever it was made. A worker that reloads later
than the one that took a REGISTER with the new password finds that binding valid once it
has the new password too.

The fingerprint is a hash (nobody reads a password back from the journal) of the account
id, username and password; an account that may not register (absent, disabled, no
``register``, no credentials) has none, so no binding matches it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from softswitch.config import Account

__all__ = ["fingerprint", "fingerprints"]


def fingerprint(account: Account | None) -> str | None:
    """The fingerprint bindings registered by ``account`` carry; None when it may not
    register."""
    if account is None or not account.register or not account.enabled:
        return None
    if account.username is None or account.password is None:
        return None
    text = json.dumps([account.id, account.username, account.password])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def fingerprints(accounts: Iterable[Account]) -> dict[str, str]:
    """Account id to fingerprint, for the accounts of a configuration that may register."""
    out: dict[str, str] = {}
    for account in accounts:
        value = fingerprint(account)
        if value is not None:
            out[account.id] = value
    return out
