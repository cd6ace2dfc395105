"""State shared by several switch nodes through Redis: limits, credit, rates, blocks.

Several switches behind DNS SRV or a load balancer must count one account's calls together.
This package keeps those counters in one Redis, with an asyncio API (redis-py's
``redis.asyncio``). The call path uses an account's ``max_calls`` and ``max_cps``
(``admission``: after the node's own ``LiveState`` limits, before the hunt), a gateway's
``capacity`` and ``max_cps`` (``admission``, before each branch), billed accounts' credit
(``credit``: the first hold at admission, each slice as the call goes on) and
authentication-failure blocks (``block_mirror``).

Configuration::

    [server]
    shared_state = "redis://127.0.0.1:6379/0"   # redis://, rediss:// or unix://
    node_id = "sw1"                              # default <hostname>:<listen port>

What is shared, one Lua script per decision so each is atomic across nodes:

* leased counters (``counters``): an account's ``max_calls``, a gateway's ``capacity``, and
  credit reservations in integer nano-units; what a node holds stops counting within
  ``lease`` seconds of its death (``leases``);
* admission rates (``rates``): ``max_cps`` as at most N admissions in any window, on Redis's
  clock;
* authentication-failure blocks (``blocks``).

The modules, in the order of a call: ``config`` (the URL), ``errors``, ``connection`` (the
client, timeouts, scripts by SHA), ``circuit`` (the back-off after a failure), ``scripts``
(the Lua), ``keys`` (names), ``holdings`` (what this node holds, the truth Redis mirrors),
``incarnations`` (which process holds a lease), ``leases``, ``counters``, ``rates``,
``blocks`` and ``state`` (:class:`SharedState`, the one object a node uses); then the
switch's use of it: ``admission`` (the account and gateway limits with the failure
policy), ``credit`` (reservations, failing closed), ``block_mirror`` (blocks, failing open)
and ``metrics``.

When Redis cannot answer, every call raises :class:`SharedStateUnavailableError` within the
client's ``timeout`` (1 s by default), or at once during the short back-off that follows a
failure (``circuit``), and the caller chooses. What we recommend:

* credit (``credit:<account>``): fail closed, refuse the call (503): a switch that cannot
  see the other nodes' reservations cannot know the balance is not spent;
* ``max_calls``, ``capacity``, ``max_cps``: fail over to the node's own ``LiveState``
  limits (each node then enforces the whole limit alone, so a cluster of N admits up to N
  times it while Redis is down), and log it once: refusing every call because the counter
  store is down would turn a Redis outage into a switch outage;
* blocks: fail open (not blocked) and keep the node's own ``LiveState`` blocks.
"""

from __future__ import annotations

from .config import check_url, redact
from .errors import SharedStateConfigError, SharedStateError, SharedStateUnavailableError
from .scripts import MAX_AMOUNT
from .state import SharedState

__all__ = [
    "MAX_AMOUNT",
    "SharedState",
    "SharedStateConfigError",
    "SharedStateError",
    "SharedStateUnavailableError",
    "check_url",
    "redact",
]
