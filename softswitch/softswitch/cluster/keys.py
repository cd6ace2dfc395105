"""The Redis key names, all under one prefix (``softswitch`` unless told otherwise).

==================================  =========  ============================================
key                                 type       holds
==================================  =========  ============================================
``<prefix>:node:<node_id>``         string     the node's lease: its incarnation, PX expiry
``<prefix>:seen:<node>#<inc>``      string     renewed with the lease, PX ``grace``: a dead
                                               incarnation's credit holds count until then
``<prefix>:hold:<key>``             hash       ``<node_id>#<incarnation>`` -> amount held
``<prefix>:rate:<key>``             zset       one member per admission, scored in µs
``<prefix>:authfail:<ip>``          zset       one member per failed authentication
``<prefix>:blocks``                 zset       IP -> end of its block (Redis ms); ended ones
                                               trimmed by the scripts, PX at the last end
==================================  =========  ============================================

A counter's ``key`` is the caller's (``account:<id>``, ``gateway:<id>``,
``credit:<account>``); every key here expires or empties by itself except the hashes, which
hold one field per node with something held and are deleted by Redis when their last field
goes. Several switches sharing one Redis for different deployments use different prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SharedStateConfigError

__all__ = ["CREDIT_PREFIX", "Keys", "lingers"]

#: The counters of billed accounts' credit (``credit:<account>``). Their dead holders count
#: for their grace after their lease (``leases``): the key decides it, never the caller, so
#: no script run on such a key deletes a field its grace still counts.
CREDIT_PREFIX = "credit:"


def lingers(key: str) -> bool:
    """Whether a dead holder's field on ``key`` counts for its grace (credit)."""
    return key.startswith(CREDIT_PREFIX)


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "softswitch"

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise SharedStateConfigError(f"key prefix {self.prefix!r}: empty or has spaces")

    @property
    def node_prefix(self) -> str:
        """What a node id is appended to for its lease key (the scripts build it too)."""
        return f"{self.prefix}:node:"

    def node(self, node_id: str) -> str:
        return self.node_prefix + node_id

    @property
    def seen_prefix(self) -> str:
        """What a holder's field (``<node_id>#<incarnation>``) is appended to for the key
        that outlives its lease by the grace (the scripts build it too)."""
        return f"{self.prefix}:seen:"

    def seen(self, field: str) -> str:
        return self.seen_prefix + field

    def hold(self, key: str) -> str:
        return f"{self.prefix}:hold:{key}"

    def rate(self, key: str) -> str:
        return f"{self.prefix}:rate:{key}"

    def failures(self, ip: str) -> str:
        return f"{self.prefix}:authfail:{ip}"

    def blocks(self) -> str:
        return f"{self.prefix}:blocks"
