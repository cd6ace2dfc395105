"""The errors of the shared state, and the one place Redis's exceptions become ours.

Three kinds, because the caller does three different things with them:

* :class:`SharedStateUnavailableError`: Redis is down, refused the connection, timed out, is
  loading its data or is a read-only replica (a failover in progress). The question could
  not be answered; the caller applies its policy (``softswitch.cluster`` says which one we
  recommend for each counter).
* :class:`SharedStateConfigError`: an operator's bad ``[server] shared_state`` URL or a
  node id in use by another live process: fix the configuration, retrying will not help.
* :class:`SharedStateError`: the base of both, and what anything else Redis answers with
  (an error reply we did not expect) is raised as.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis import exceptions as redis_errors

__all__ = [
    "SharedStateConfigError",
    "SharedStateError",
    "SharedStateUnavailableError",
    "translated",
]


class SharedStateError(Exception):
    """Something went wrong with the shared state; see the subclasses."""


class SharedStateUnavailableError(SharedStateError):
    """Redis could not answer (down, timed out, loading, read-only): the caller's policy
    decides whether the call goes on (fail open) or is refused (fail closed)."""


class SharedStateConfigError(SharedStateError, ValueError):
    """A bad URL or argument: the message names the problem."""


#: Redis answers that mean "not now" rather than "wrong": a failover or a restart.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # BusyLoadingError is one
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.TryAgainError,
    TimeoutError,
    OSError,
)


@contextlib.contextmanager
def translated(where: str) -> Iterator[None]:
    """Run a Redis call, raising its failures as ours; ``where`` says which Redis (no
    password) and what we were doing."""
    try:
        yield
    except redis_errors.AuthenticationError as e:
        raise SharedStateConfigError(f"{where}: authentication failed: {e}") from e
    except _UNAVAILABLE as e:
        detail = str(e) or type(e).__name__
        raise SharedStateUnavailableError(f"{where}: Redis unavailable: {detail}") from e
    except redis_errors.RedisError as e:
        raise SharedStateError(f"{where}: Redis answered an error: {e}") from e
