"""A reload's drops across workers: a binding made under credentials a reload changed is used
by no worker, whichever worker took it, however the journal is replayed, while a binding
made under the new credentials counts everywhere once each worker has them.

Two workers here are two registrars in one process, each with its own snapshot, pipeline
and writer, sharing the journal the supervisor makes (``SharedState.bindings``) and the
database file, as ``softswitch run --workers 2`` does across processes."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from registrar_support import CONFIG, PHONE, NullSink, make_snapshot, phone_calls, register

from softswitch.call.live import LiveState
from softswitch.proxy.pipeline import Pipeline
from softswitch.registrar import Binding, BindingWriter, Registrar, load
from softswitch.sip import Response
from softswitch.sip.digest import DigestAuthenticator, build_authorization
from softswitch.transport import Flow, Transport
from softswitch.workers.live import SharedState
from softswitch.workers.registrations import SharedRegistrations

ROTATED = CONFIG.replace('password = "secret"\nregister', 'password = "rotated"\nregister')
_dirs = itertools.count()


class Worker:
    """One worker's registrar, pipeline and index; started as a worker starts (the table,
    then the journal)."""

    def __init__(self, tmp_path: Path, shared: SharedState, index: int, config: str) -> None:
        self.tmp_path = tmp_path
        self.database = tmp_path / "cdr.sqlite"
        self.nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
        self.live = LiveState()
        self.bindings = SharedRegistrations(
            shared.bindings, index, lambda: load(self.database, time.time())
        )
        self.learned: list[Binding] = []
        self.bindings.learned = self.learned.append
        self.pipeline = Pipeline(
            self._snapshot(config), self.live, self.nonces, NullSink(), registrations=self.bindings
        )
        self.writer = BindingWriter(self.database)
        self.registrar = Registrar(
            self.bindings,
            self.writer,
            snapshot=lambda: self.pipeline.snapshot,
            nonces=self.nonces,
            live=self.live,
            guard=self.pipeline.guard,
        )
        self.bindings.restore(load(self.database, time.time()))
        self.pipeline.trust_registrations()

    def _snapshot(self, config: str) -> object:
        where = self.tmp_path / f"config{next(_dirs)}"
        where.mkdir()
        return make_snapshot(where, config)

    def reload(self, config: str) -> list[Binding]:
        """SIGHUP, as ``Switch.reload`` does it."""
        new = self._snapshot(config)
        dropped = self.registrar.forget_changed(self.pipeline.snapshot, new)  # type: ignore[arg-type]
        self.pipeline.use(new)  # type: ignore[arg-type]
        return dropped

    def registered(self, contact: str, password: str, call_id: str = "reg-1") -> Response:
        """REGISTER from the phone, the 401 answered with ``password``; the final answer."""
        flow = Flow(Transport.UDP, ("127.0.0.1", 5060), PHONE)
        challenge = self.registrar.register(
            register(contact, expires=120, call_id=call_id), flow, time.time()
        )
        assert challenge.status == 401
        value = challenge.headers.get("WWW-Authenticate")
        assert value is not None
        auth = build_authorization(
            value, method="REGISTER", uri="sip:127.0.0.1:5060", username="pbx", password=password
        )
        request = register(contact, expires=120, call_id=call_id, cseq=2, authorization=auth)
        return self.registrar.register(request, flow, time.time())

    def contacts(self) -> list[str]:
        return [b.contact for b in self.bindings.contacts("pbx", time.time())]

    def phone_calls(self) -> int | None:
        """The status a call from the phone's address gets at admission (None: admitted)."""
        return phone_calls(self.pipeline)


@pytest.fixture
def shared() -> SharedState:
    return SharedState(workers=2, ids=1)


@pytest.fixture
def workers(tmp_path: Path, shared: SharedState) -> Iterator[list[Worker]]:
    made = [Worker(tmp_path, shared, 0, CONFIG), Worker(tmp_path, shared, 1, CONFIG)]
    yield made
    for worker in made:
        worker.writer.close()


CONTACT = "<sip:pbx@192.168.1.20:5060>"


def test_a_register_with_the_old_password_on_a_worker_not_yet_reloaded_is_used_by_none(
    workers: list[Worker],
) -> None:
    """SIGHUP reaches worker 0 first; worker 1, still on the old password, accepts a
    REGISTER made with it. Worker 0 neither routes to that contact nor authorises calls
    from its source; once worker 1 reloads it drops it too, and the table row goes."""
    reloaded, late = workers
    assert reloaded.reload(ROTATED) == []
    assert late.registered(CONTACT, "secret").status == 200
    assert late.contacts() == ["sip:pbx@192.168.1.20:5060"]
    assert reloaded.contacts() == []
    assert reloaded.bindings.account_at(*PHONE, time.time(), "udp") is None
    assert reloaded.phone_calls() == 407  # challenged, not authorised by the registration
    assert reloaded.learned == []  # its source not trusted either
    assert [b.contact for b in late.reload(ROTATED)] == ["sip:pbx@192.168.1.20:5060"]
    assert late.contacts() == []
    assert late.writer.flush()
    assert load(late.database, time.time()) == []


def test_a_dropped_registration_stays_dropped_for_a_worker_that_restarts(
    tmp_path: Path, shared: SharedState, workers: list[Worker]
) -> None:
    """The journal still holds the REGISTER a reload dropped: a worker started afterwards
    (a restart, or one that read the table again) replays it, and does not take it back."""
    first, second = workers
    assert first.registered(CONTACT, "secret").status == 200
    assert second.contacts() == ["sip:pbx@192.168.1.20:5060"]
    first.reload(ROTATED)
    second.reload(ROTATED)
    assert first.writer.flush()
    assert second.writer.flush()
    restarted = Worker(tmp_path, shared, 1, ROTATED)
    try:
        assert restarted.contacts() == []
        assert restarted.phone_calls() == 407
        assert restarted.learned == []
        # The new password registers again, and every worker has it.
        assert restarted.registered(CONTACT, "rotated", call_id="reg-2").status == 200
        assert first.contacts() == ["sip:pbx@192.168.1.20:5060"]
        assert first.phone_calls() is None
    finally:
        restarted.writer.close()


def test_a_register_with_the_new_password_counts_once_the_other_worker_reloads(
    workers: list[Worker],
) -> None:
    """The other way round: a worker still on the old password keeps the contact another
    worker took with the new one, unused until its own reload makes it valid there."""
    reloaded, late = workers
    reloaded.reload(ROTATED)
    assert reloaded.registered(CONTACT, "rotated").status == 200
    assert late.contacts() == []  # not under the credentials late still runs
    assert late.reload(ROTATED) == []
    assert late.contacts() == ["sip:pbx@192.168.1.20:5060"]
    assert late.phone_calls() is None
