"""The switch's registrar: a REGISTER screened, authenticated, decided, applied, answered.

``screen_register`` runs before any state is kept (``Pipeline.screen`` asks it): a REGISTER
without credentials for our realm is challenged ``401`` statelessly, from any source, like
an INVITE's ``407`` (registering accounts may register from anywhere), and a blocked or
scanning stranger gets what the guard gives it. One *with* credentials becomes a server
transaction and reaches :meth:`Registrar.register`, which verifies the digest against the
account named by the user name (it must have ``register = true``), checks that the To
header's user is that user name (its address of record), lets ``register.decide`` say what
changes, applies it to the live index and queues it for the disk.

A failed verification counts towards blocking the address exactly as a failed INVITE does
(``[defaults] auth_fail_limit``), and every refusal is the same ``403`` whatever the
reason. A success makes the address trusted by the guard (``SourceGuard.trust``), so the
account's INVITEs from it are not counted by pike nor challenged before authorise, which
authorises them by the registration (``call.authorise``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence

from softswitch.call.live import LiveState
from softswitch.call.snapshot import Snapshot
from softswitch.security import Screen, SourceGuard
from softswitch.sip import Request, Response, SipURI, make_tag, unescape
from softswitch.sip.digest import (
    DigestAuthenticator,
    DigestCredentials,
    DigestParseError,
    parse_credentials,
)
from softswitch.transport import Flow, Transport

from .bindings import Binding, Registrations
from .credentials import fingerprint, fingerprints
from .register import Accepted, Limits, Source, decide
from .store import BindingWriter, storable

__all__ = ["PURGE_INTERVAL", "SWEEP_INTERVAL", "Registrar", "has_authorization", "screen_register"]

logger = logging.getLogger("softswitch.registrar")

#: Seconds between sweeps of expired bindings (a lookup ignores them in between anyway).
SWEEP_INTERVAL = 10.0
#: Seconds between the keeper's purges of the rows expired long ago (``BindingWriter.purge``):
#: the table then holds at most a minute's worth of them past the ones kept. The purge finds
#: them by the index on ``expires_at`` (schema migration 4), not by reading every row.
PURGE_INTERVAL = 60.0

_DUMMY_PASSWORD = secrets.token_hex(16)


def _credentials(request: Request, realm: str) -> DigestCredentials | None:
    """Our realm's ``Authorization`` credentials; DigestParseError if ours are malformed."""
    for value in request.headers.get_all("Authorization"):
        try:
            cred = parse_credentials(value)
        except DigestParseError:
            if f'realm="{realm}"' in value or f"realm={realm}" in value:
                raise
            continue
        if cred.realm == realm:
            return cred
    return None


def has_authorization(request: Request, realm: str) -> bool:
    """Whether a REGISTER carries credentials for our realm (even malformed ones)."""
    try:
        return _credentials(request, realm) is not None
    except DigestParseError:
        return True


def screen_register(
    request: Request,
    source: tuple[str, int],
    guard: SourceGuard,
    *,
    realm: str,
    challenge: Callable[[], list[str]],
) -> Screen | None:
    """None: handle the REGISTER statefully (it has credentials); else the stateless answer:
    the guard's for a blocked or scanning stranger, ``401`` with a challenge for the rest."""
    ip, port = source
    now = guard.clock()
    if not guard.is_known(ip, port, now):
        blocked = len(guard.blocks) > 0 and guard.blocks.is_blocked(ip, now)
        agent = request.headers.get("User-Agent")
        if blocked or (agent is not None and guard.is_scanner(agent)):
            return guard.screen(request, source, has_credentials=lambda r: False, challenge=None)
    if has_authorization(request, realm):
        return None
    guard.challenges += 1  # the first step of digest, not a refusal
    return Screen(401, "challenged", tuple(("WWW-Authenticate", v) for v in challenge()))


class Registrar:
    """REGISTER handling of one switch. ``snapshot`` gives the configuration in force."""

    def __init__(
        self,
        bindings: Registrations,
        writer: BindingWriter | None,
        *,
        snapshot: Callable[[], Snapshot],
        nonces: DigestAuthenticator,
        live: LiveState,
        guard: SourceGuard,
        keeper: bool = True,
        purge_interval: float = PURGE_INTERVAL,
    ) -> None:
        self.bindings = bindings
        self.writer = writer
        #: Whether this process deletes the expired rows from the database: the one
        #: process, or the primary of several workers (each of which drops them from its
        #: own index by itself). Nodes sharing a PostgreSQL each have one: their purges
        #: delete the same rows, and deleting a row twice is deleting it once.
        self.keeper = keeper
        self.purge_interval = purge_interval
        #: Wall-clock second of the last purge asked for (None: none yet).
        self._purged_at: float | None = None
        self._snapshot = snapshot
        # Bindings count under the credentials in force only (``registrar.credentials``).
        bindings.accept(fingerprints(snapshot().config.accounts))
        self.nonces = nonces
        self.live = live
        self.guard = guard
        self._seen: Snapshot | None = None
        self._active = False

    def active(self) -> bool:
        """Whether any account of the configuration in force may register (else a REGISTER
        is answered 405, as by a switch without a registrar)."""
        snapshot = self._snapshot()
        if snapshot is not self._seen:
            self._seen = snapshot
            self._active = any(a.register for a in snapshot.config.accounts)
        return self._active

    async def sweep_forever(self, interval: float = SWEEP_INTERVAL) -> None:
        """Sweep expired bindings every ``interval`` seconds until cancelled; in between,
        take the changes other workers made once a second (``Registrations.refresh``), so
        that a worker taking no calls does not fall behind, and catch up off the loop when
        it did (``Registrations.catch_up``, retried here until it succeeds)."""
        swept = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, interval))
            try:
                self.bindings.refresh()
                await self.bindings.catch_up()
                if time.monotonic() - swept >= interval:
                    swept = time.monotonic()
                    self.sweep(time.time())
            except Exception:
                logger.exception("sweeping expired registrations failed")

    def register(self, request: Request, flow: Flow, now: float) -> Response:
        """The final response to a REGISTER (``now``: wall-clock seconds)."""
        snapshot = self._snapshot()
        realm = snapshot.config.server.realm
        # Who registers (the client behind a trusted proxy): its ips, failures and blocks.
        # Where it is reached stays the remote the REGISTER came from (the binding's source).
        ip, port = flow.origin
        ip = ip.strip("[]")
        defaults = snapshot.config.defaults
        mono = time.monotonic()

        def answer(
            status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()
        ) -> Response:
            return Response.for_request(request, status, reason, to_tag=make_tag(), headers=headers)

        def challenge(stale: bool = False) -> Response:
            values = self.nonces.challenges(now, stale=stale)
            return answer(401, headers=[("WWW-Authenticate", v) for v in values])

        def fail(detail: str) -> Response:
            self.live.note_auth_failure(
                ip,
                mono,
                limit=defaults.auth_fail_limit,
                window=defaults.auth_fail_window,
                block_for=defaults.auth_block_time,
            )
            logger.info("REGISTER from %s:%d refused: %s", ip, port, detail)
            return answer(403)

        if self.live.is_blocked(ip, mono):
            return answer(403)
        try:
            cred = _credentials(request, realm)
        except DigestParseError as e:
            return fail(f"malformed credentials: {e}")
        if cred is None:
            return challenge()
        user = snapshot.users.get(cred.username)
        expected = user if user is not None and user.register and user.enabled else None
        # An account that needs its addresses as well as its password registers from them
        # only, as its INVITEs are taken from them only (its registration would otherwise
        # authorise calls from anywhere its password leaked to). Checked before the password,
        # as the call's authorisation does: from elsewhere a right password must get the
        # answer a wrong one gets, never a stale challenge that tells them apart.
        elsewhere = (
            expected is not None
            and expected.uses_ip
            and expected not in snapshot.accounts_for_source(ip, port)
        )
        if elsewhere:
            expected = None
        password = expected.password if expected is not None else None
        result = self.nonces.verify(
            cred,
            method="REGISTER",
            now=now,
            password=password if password is not None else _DUMMY_PASSWORD,
            request_uri=str(request.uri),
        )
        if result.stale and expected is not None:
            return challenge(stale=True)
        if elsewhere:
            return fail(f"account of {cred.username!r} does not list {ip}:{port} in its ips")
        if not result.ok or expected is None:
            why = result.reason if expected is not None else "unknown user or not registering"
            return fail(f"digest user {cred.username!r}: {why}")
        to = request.to
        aor = to.uri if to is not None else None
        if not isinstance(aor, SipURI) or unescape(aor.user or "") != expected.username:
            return fail(f"digest user {cred.username!r} may not register {aor}")
        self.live.note_auth_success(ip)
        self.guard.trust(ip)

        server = snapshot.config.server
        transport = "tcp" if flow.transport is Transport.TCP else "udp"
        longest = server.registrar_max_expires
        if transport == "tcp":
            # The connection is how a contact behind a NAT is reached: refreshed before the
            # idle timeout closes it, so it stays open for as long as the binding lives.
            longest = max(server.registrar_min_expires, min(longest, int(server.tcp_idle_timeout)))
        limits = Limits(server.registrar_min_expires, longest)
        # Held still from reading the account's bindings to applying the change: with
        # several workers another worker's REGISTER in between could take the account past
        # the contact cap (or make this one out of order).
        with self.bindings.exclusive():
            outcome = decide(
                request,
                expected.id,
                self.bindings.of(expected.id),
                Source(transport, flow.remote[0].strip("[]"), flow.remote[1]),
                now,
                limits,
                user_agent=storable((request.headers.get("User-Agent") or "")[:200]),
                credentials=fingerprint(expected) or "",
                # A Path is believed from a trusted proxy only (it names where calls go).
                path_from=None if flow.client is None else flow.remote[0],
            )
            if isinstance(outcome, Accepted):
                self.apply(outcome, now)
        if not isinstance(outcome, Accepted):
            logger.info(
                "REGISTER account=%s refused %d %s", expected.id, outcome.status, outcome.reason
            )
            return answer(outcome.status, outcome.reason, outcome.headers)
        return answer(200, headers=outcome.headers(now))

    def apply(self, outcome: Accepted, now: float) -> None:
        """Change the live index, then queue the change for the disk (``now``: the
        REGISTER's wall-clock second, which orders an unregister in the table)."""
        for binding in outcome.removed:
            self.bindings.remove(binding.account_id, binding.contact, now)
            logger.info("unregistered account=%s contact=%s", binding.account_id, binding.contact)
        for binding in outcome.put:
            self.bindings.put(binding)
            logger.info(
                "registered account=%s contact=%s from %s:%s/%s until %.0f%s",
                binding.account_id,
                binding.contact,
                binding.source_ip,
                binding.source_port,
                binding.transport,
                binding.expires_at,
                f" (reached through Path {binding.path})"
                if binding.path
                else " (NAT: reached at the source)"
                if binding.nat
                else "",
            )
        if self.writer is not None:
            # Other writers share the table (workers, or nodes on one PostgreSQL): a
            # tombstone, so that an older REGISTER one of them commits later stays out.
            shared = self.bindings.shared_table or self.writer.postgres
            tombstone_at = now if shared else None
            self.writer.remove(outcome.removed, tombstone_at=tombstone_at)
            self.writer.put(outcome.put)

    def forget_changed(self, old: Snapshot, new: Snapshot) -> list[Binding]:
        """After a reload: drop the bindings of accounts that no longer register, were
        disabled or removed, or whose username or password changed. Rotating a leaked
        password must cut off the devices registered with it: they register again with
        the new one, or not at all.

        The index judges every binding by the new configuration's fingerprints from now
        on (``registrar.credentials``), so a dropped binding stays dropped here whatever
        brings it back: another worker that took it with the old password before its own
        reload, or the journal replayed by a worker that restarts or falls behind. The
        rows go from the table too; every worker deletes the ones it drops (a row another
        worker's writer commits after the primary's delete is deleted by that worker's own
        writer, after it), each unless a later REGISTER replaced it.

        Only the rows of bindings the *old* configuration accepted, though: a binding
        neither configuration accepts came from a node whose configuration differs from
        this one's (a rollout reaching the nodes one by one: the other node may already run
        the new password this one has yet to get), and is that node's to keep or drop. It
        leaves this index only.
        """
        self.bindings.refresh()  # the other workers' changes too, judged alike
        before = fingerprints(old.config.accounts)
        self.bindings.accept(fingerprints(new.config.accounts))
        dropped = [b for b in self.bindings.every() if not self.bindings.accepts(b)]
        for binding in dropped:
            self.bindings.forget(binding.account_id, binding.contact)
        cut_off = [b for b in dropped if before.get(b.account_id) == b.credentials]
        for account_id in sorted({b.account_id for b in cut_off}):
            logger.warning(
                "registrations of account=%s dropped: its credentials or registering changed",
                account_id,
            )
        if cut_off and self.writer is not None:
            self.writer.retire(cut_off)
        return dropped

    def sweep(self, now: float) -> list[Binding]:
        """Remove the expired bindings, from memory and (the keeper) from disk. Every
        worker drops them from its own index by the clock; none tells the others.

        The keeper also has its writer purge, every ``purge_interval`` seconds, the rows
        expired long ago: tombstones, and expiries another process wrote or this one did
        not retire (``BindingWriter.purge``); else only a restart would delete them."""
        expired = self.bindings.expired(now)
        for binding in expired:
            self.bindings.forget(binding.account_id, binding.contact)
            logger.info("expired account=%s contact=%s", binding.account_id, binding.contact)
        if self.writer is not None and self.keeper:
            if expired:
                self.writer.retire(expired)
            last = self._purged_at
            # A clock set back (``now`` before the last purge) purges too, and starts over.
            if last is None or not 0 <= now - last < self.purge_interval:
                self._purged_at = now
                self.writer.purge(now)
        return expired
