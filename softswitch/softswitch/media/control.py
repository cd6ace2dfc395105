"""The switch's side of its media relays: offers, answers, deletes and the media timeout.

The engine decides *when* a message's SDP goes through a relay (``proxy.media``); this is
*how*: the NG commands with the flags that hide each side's addresses from the other and
apply the codec policy, the relay pool (weights, pings), deletes that never hold a call
up, and one poll of ``query`` for every answered relayed call, to end the ones whose RTP
has stopped both ways.

Each gateway attempt of a call is its own session on the relay (:class:`NgLeg`): a failed
attempt is deleted on its own while the call hunts on, and the attempt that answers is the
call's media session until it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from softswitch.config import Config

from .bencode import Encodable
from .codecs import NON_VOICE
from .leg import NgLeg
from .ng import NgError, NgTimeout, packet_totals, packets_received
from .relays import Relay, RelayPool, RelaySpec

__all__ = [
    "MediaControl",
    "MediaStats",
    "MediaUnavailableError",
    "NgLeg",
    "OfferRefusedError",
    "codec_flags",
    "media_control",
]

logger = logging.getLogger("softswitch.media")

#: The non-voice formats a codec policy keeps, in the order they follow the voice codecs.
NON_VOICE_ORDER = tuple(sorted(NON_VOICE, reverse=True))  # telephone-event, CN

#: Every offer and answer: the relay's addresses replace both the session-level and the
#: origin's address (topology hiding: no side sees the other's IPs), ICE candidates of
#: the far side are not passed on, and RTCP stays on its own port.
_REPLACE = ("origin", "session-connection")
_ICE: dict[str, Encodable] = {"ICE": "remove"}


class MediaUnavailableError(Exception):
    """The relay did not answer (or failed): the call cannot have relayed media."""


class OfferRefusedError(MediaUnavailableError):
    """The relay answered with an error about this SDP (not the relay's health)."""


def codec_flags(
    codecs: Sequence[str], *, transcode: bool = False
) -> dict[str, Sequence[str]] | None:
    """rtpengine's ``codec`` dictionary for an allowed list (None: no policy).

    ``strip: all`` with ``offer`` keeps only the listed codecs, in the listed order: the
    one combination rtpengine 10.5 reorders with (``except`` keeps the caller's order).
    telephone-event and CN are listed last, so DTMF and comfort noise stay when offered.
    An offer that would be left with nothing comes through rtpengine *unchanged*, so the
    switch checks for a codec in common before it asks (``media.offer.offer_allowed``).
    ``transcode``: ``mask: all`` with ``transcode`` offers exactly the listed codecs, the
    relay converting the caller's codec to the one the far side picks.
    """
    if not codecs:
        return None
    if transcode:
        return {"mask": ["all"], "transcode": [*codecs, "telephone-event"]}
    return {"strip": ["all"], "offer": [*codecs, *NON_VOICE_ORDER]}


@dataclass(slots=True)
class MediaStats:
    """Counters since start (logs, metrics, tests)."""

    offers: int = 0
    answers: int = 0
    deletes: int = 0
    failures: int = 0
    timeouts: int = 0


@dataclass(eq=False, slots=True)
class _Watched:
    """One answered relayed call under the media timeout, on the switch's monotonic clock:
    ``alive`` when its packet count last grew (or it was watched), ``answered`` when the
    relay last answered a query about it."""

    relay: Relay
    leg: NgLeg
    timeout: float
    on_dead: Callable[[], None]
    alive: float
    answered: float
    packets: int = 0


@dataclass(eq=False)
class MediaControl:
    """The relays and what the switch asks of them (see the module docstring)."""

    pool: RelayPool
    poll_interval: float = 5.0
    stats: MediaStats = field(default_factory=MediaStats)
    _watched: dict[object, _Watched] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pool.start()
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self, grace: float = 2.0) -> None:
        """Let the deletes in flight finish (up to ``grace`` s), then stop."""
        if self._poller is not None:
            self._poller.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await self.pool.close()

    def pick(self, exclude: Sequence[str] = ()) -> Relay | None:
        """A relay for a new call, by weight among those answering pings."""
        return self.pool.pick(exclude)

    # -- offer, answer: a message's SDP through the relay --------------------------------

    async def offer(
        self,
        relay: Relay,
        leg: NgLeg,
        sdp: bytes,
        *,
        from_tag: str,
        to_tag: str | None,
        codecs: Sequence[str] = (),
        transcode: bool = False,
    ) -> bytes:
        """The SDP an offer's receiver gets: the relay's addresses, the allowed codecs."""
        extra = dict(_ICE)
        if to_tag:
            extra["to-tag"] = to_tag
        self.stats.offers += 1
        request = relay.client.offer(
            leg.call_id,
            from_tag,
            sdp,
            replace=_REPLACE,
            codec=codec_flags(codecs, transcode=transcode),
            extra=extra,
        )
        return await self._ask(relay, request)

    async def answer(
        self, relay: Relay, leg: NgLeg, sdp: bytes, *, from_tag: str, to_tag: str
    ) -> bytes:
        """The SDP an answer's receiver gets (``from_tag``: the offerer's tag)."""
        self.stats.answers += 1
        request = relay.client.answer(
            leg.call_id, from_tag, to_tag, sdp, replace=_REPLACE, extra=dict(_ICE)
        )
        return await self._ask(relay, request)

    async def _ask(self, relay: Relay, request: Awaitable[bytes]) -> bytes:
        try:
            return await request
        except NgTimeout as exc:
            self.stats.failures += 1
            self.pool.failed(relay)
            raise MediaUnavailableError(f"relay {relay.id} did not answer: {exc}") from exc
        except NgError as exc:
            self.stats.failures += 1
            raise OfferRefusedError(f"relay {relay.id}: {exc}") from exc

    # -- delete: on every way an attempt or a call ends -----------------------------------

    def delete(
        self,
        relay: Relay,
        leg: NgLeg,
        call_id: str | None = None,
        *,
        from_tag: str | None = None,
    ) -> None:
        """Free the attempt's ports on its relay, in the background (a call's end never
        waits for it). The relay's final counters go to the log: rtpengine 10.5 sends them
        only when the delete names a tag (``from_tag``, the caller's: the whole session is
        deleted all the same)."""
        self.stats.deletes += 1
        task = asyncio.get_running_loop().create_task(self._delete(relay, leg, call_id, from_tag))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete(
        self, relay: Relay, leg: NgLeg, call_id: str | None, from_tag: str | None
    ) -> None:
        try:
            reply = await relay.client.delete(leg.call_id, from_tag=from_tag or None)
        except NgTimeout:
            self.pool.failed(relay)
            logger.warning(
                "call_id=%s media delete of %s on relay %s not answered (its own timeout"
                " will free the ports)",
                call_id,
                leg.call_id,
                relay.id,
                extra={"call_id": call_id},
            )
            return
        except NgError as exc:
            logger.info(
                "call_id=%s media delete of %s: %s",
                call_id,
                leg.call_id,
                exc,
                extra={"call_id": call_id},
            )
            return
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "call_id=%s media deleted relay=%s session=%s packets=%s",
                call_id,
                relay.id,
                leg.call_id,
                packet_totals(reply),
                extra={"call_id": call_id},
            )

    # -- the media timeout ----------------------------------------------------------------

    def watch(
        self,
        key: object,
        relay: Relay,
        leg: NgLeg,
        timeout: float,
        on_dead: Callable[[], None],
    ) -> None:
        """Call ``on_dead`` once the leg's RTP has stopped both ways for ``timeout`` s."""
        if timeout > 0:
            now = time.monotonic()
            self._watched[key] = _Watched(relay, leg, timeout, on_dead, alive=now, answered=now)

    def unwatch(self, key: object) -> None:
        self._watched.pop(key, None)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if not self._watched:
                continue
            watched = list(self._watched.items())
            results = await asyncio.gather(
                *(self._check(key, w) for key, w in watched), return_exceptions=True
            )
            for result in results:  # a bug in one check must not stop the poller
                if isinstance(result, Exception):
                    logger.error("media timeout check failed", exc_info=result)

    async def _check(self, key: object, watched: _Watched) -> None:
        """Activity is the relay's packet counters growing between two polls, timed on the
        switch's own clock (the relay's ``last packet`` stamps are its wall clock, and a
        stream's is set before any packet arrives). A relay that has not answered about the
        call for the whole timeout counts as no media: a dead relay's calls must not bill
        on until their maximum duration."""
        now = time.monotonic()
        try:
            reply = await watched.relay.client.query(watched.leg.call_id)
        except NgTimeout:
            pass  # unanswered: judged by ``answered`` below
        except NgError as exc:
            # The relay forgot the call: its own timeout deleted it, or it restarted.
            logger.info("media query of %s: %s", watched.leg.call_id, exc)
            watched.answered = now
        else:
            watched.answered = now
            packets = packets_received(reply)
            if packets > watched.packets:
                watched.packets, watched.alive = packets, now
        dead = now - watched.alive >= watched.timeout or now - watched.answered >= watched.timeout
        if dead and self._watched.get(key) is watched:
            del self._watched[key]
            self.stats.timeouts += 1
            watched.on_dead()


def media_control(config: Config) -> MediaControl | None:
    """The switch's relays as ``[media]`` and ``[[media_relays]]`` say (None: no relays)."""
    if not config.media_relays:
        return None
    specs = [
        RelaySpec(relay.id, *relay.host_port, weight=relay.weight) for relay in config.media_relays
    ]
    pool = RelayPool(
        specs,
        timeout=config.media.ng_timeout,
        retries=config.media.ng_retries,
        ping_interval=config.media.ping_interval,
    )
    return MediaControl(pool, poll_interval=config.media.poll_interval)
