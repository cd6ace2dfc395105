"""What the workers' registration tests share: a binding of the test PBX, and a table read
that must not happen."""

from __future__ import annotations

import time

from softswitch.registrar import Binding

#: The test PBX's contact.
CONTACT = "sip:pbx@192.0.2.7:5070"


def binding(
    contact: str = CONTACT, *, account: str = "pbx", at: float | None = None, port: int = 5070
) -> Binding:
    """A five-minute binding of ``contact`` registered at ``at`` (None: now)."""
    now = time.time() if at is None else at
    return Binding(
        account_id=account,
        contact=contact,
        expires_at=now + 300,
        q=1.0,
        call_id=f"reg-{now}",
        cseq=1,
        transport="udp",
        source_ip="192.0.2.7",
        source_port=port,
        nat=False,
        registered_at=now,
        user_agent="phone/1.0",
    )


def no_table() -> list[Binding]:
    raise AssertionError("the table is not read while the journal has every change")
