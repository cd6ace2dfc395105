"""One Redis client for the shared state: timeouts, no hidden retries, scripts by SHA.

The client gives up after ``timeout`` seconds (connecting or waiting for an answer) and does
not retry by itself: a retried script may have run the first time (the answer was lost, not
the request), and running an admission twice would count a call twice. A failed call raises
``SharedStateUnavailableError`` and the caller's policy decides; after a failure the
``circuit`` answers at once for a short back-off, then the next call opens a fresh
connection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .circuit import Circuit
from .config import check_url, redact
from .errors import translated
from .scripts import Script

__all__ = ["Link"]

logger = logging.getLogger("softswitch.cluster")


class Link:
    """A redis-py asyncio client with our error translation and script runner."""

    def __init__(self, url: str, *, timeout: float = 1.0, name: str | None = None) -> None:
        check_url(url)
        self.where = f"shared state {redact(url)}"
        self.circuit = Circuit()
        """Fails questions at once for a back-off after Redis failed (``circuit``)."""
        self.reloads = 0
        """How many times a script was sent again after NOSCRIPT (a Redis restart or a
        ``SCRIPT FLUSH``)."""
        with translated(self.where):
            self.client: Redis = Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                decode_responses=True,
                client_name=name,
            )

    async def command(self, *args: str | int) -> Any:
        where = f"{self.where} ({args[0]})"
        with self.circuit.asking(where), translated(where):
            return await self.client.execute_command(*args)  # type: ignore[no-untyped-call]

    async def run(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[str | int],
        *,
        always: bool = False,
    ) -> Any:
        """Run ``script`` by its SHA-1, sending its text when Redis does not have it.
        ``always``: ask even while the circuit backs off (a clean stop's last word)."""
        where = f"{self.where} (script {script.name})"
        with self.circuit.asking(where, always=always), translated(where):
            try:
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                self.reloads += 1
                logger.info(
                    "shared state: Redis does not know script %s (restarted or flushed);"
                    " sending it again",
                    script.name,
                    extra={"event": "script_reload", "script": script.name},
                )
                # EVAL runs it and caches it under the same SHA-1 for the next EVALSHA.
                return await self.client.eval(script.text, len(keys), *keys, *args)

    async def close(self) -> None:
        with translated(self.where):
            await self.client.aclose()
