"""aiosip's exception names, so ``except aiosip.exceptions.AuthentificationFailed`` still works.

The spelling ``Authentification`` is aiosip's and is kept on purpose: programs catch it by
that name.
"""

from __future__ import annotations

__all__ = [
    "AiosipException",
    "AuthentificationFailed",
    "InviteFailed",
    "InviteOngoing",
    "RegisterFailed",
    "RegisterOngoing",
]


class AiosipException(Exception):  # noqa: N818 (aiosip's name)
    """Base of aiosip's own errors."""


class AuthentificationFailed(PermissionError):  # noqa: N818 (aiosip's name)
    """The peer kept refusing our digest credentials (401/407 after every retry)."""


# The four names below are never raised by this package: a refused REGISTER or INVITE is
# reported by its dialog's ``status_code``. They exist so that ``except`` clauses written
# for aiosip still name something.


class RegisterFailed(AiosipException):
    """Kept for aiosip programs' ``except`` clauses; not raised here."""


class RegisterOngoing(AiosipException):
    """Kept for aiosip programs' ``except`` clauses; not raised here."""


class InviteFailed(AiosipException):
    """Kept for aiosip programs' ``except`` clauses; not raised here."""


class InviteOngoing(AiosipException):
    """Kept for aiosip programs' ``except`` clauses; not raised here."""
