"""Registered contacts across nodes sharing one PostgreSQL: a contact registered through one
node is called through another within about a second, without a restart; an unregister, a
password rotation's drop, reach it too; a binding made under credentials the other node's
configuration does not have is not used there; a node that lost its connection catches up
after reconnecting; stopping leaves no thread or connection behind.

Each node here is a registrar in one process with its own snapshot, pipeline, index, writer
and listener (``registrar.node_sync``) on one database, as two ``softswitch run`` on two
hosts have (one node runs two workers sharing a journal); one test runs two whole
``Switch`` objects."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from registrar_support import CONFIG, PHONE, NullSink, binding, make_snapshot, phone_calls, register

from postgres_tool import Postgres, postgres
from softswitch.call.live import LiveState
from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config
from softswitch.proxy.pipeline import Pipeline
from softswitch.proxy.server import Switch
from softswitch.registrar import BindingWriter, Registrar, Registrations, load
from softswitch.registrar.node_sync import NodeSync
from softswitch.sip import Request, Response
from softswitch.sip.digest import DigestAuthenticator, build_authorization
from softswitch.store.migrations import migrate
from softswitch.store.postgres_connect import connect
from softswitch.transport import Flow, Transport
from softswitch.workers.live import SharedState
from softswitch.workers.registrations import SharedRegistrations

__all__ = ["postgres"]

CONTACT = "<sip:pbx@192.168.1.20:5060>"
URI = "sip:pbx@192.168.1.20:5060"
ROTATED = CONFIG.replace('password = "secret"\nregister', 'password = "rotated"\nregister')
LISTENER = "softswitch registrar listener"
#: How long a change may take to reach the other node here (the design says "about a
#: second"; on an idle machine it is milliseconds).
WITHIN = 5.0
_dirs = itertools.count()


@pytest.fixture
def database(postgres: Postgres) -> str:
    url = postgres.database()
    migrate(url)
    return url


class Node:
    """One node's registrar, pipeline, index, writer and listener on ``database``;
    started as ``Switch.start`` does (the table, then listening)."""

    def __init__(
        self,
        tmp_path: Path,
        database: str,
        config: str = CONFIG,
        *,
        connect: Callable[[], Any] | None = None,
        bindings: Registrations | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.database = database
        self.nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
        self.live = LiveState()
        self.bindings = bindings if bindings is not None else Registrations()
        self.pipeline = Pipeline(
            self._snapshot(config), self.live, self.nonces, NullSink(), registrations=self.bindings
        )
        self.writer = BindingWriter(database)
        self.registrar = Registrar(
            self.bindings,
            self.writer,
            snapshot=lambda: self.pipeline.snapshot,
            nonces=self.nonces,
            live=self.live,
            guard=self.pipeline.guard,
        )
        self.bindings.restore(load(database, time.time()))
        self.learned: list[str] = []
        self.sync = NodeSync(
            database,
            self.bindings,
            learned=lambda b: self.learned.append(b.contact),
            connect=connect,
            delays=(0.1,),
        )
        self.sync.start()

    async def started(self) -> None:
        """Until the listener read the table once (it listens from then on)."""
        await until(lambda: self.sync.reads >= 1)

    def close(self) -> None:
        self.sync.stop()
        self.writer.close()

    def _snapshot(self, config: str) -> Any:
        where = self.tmp_path / f"config{next(_dirs)}"
        where.mkdir()
        return make_snapshot(where, config)

    def reload(self, config: str) -> None:
        """SIGHUP, as ``Switch.reload`` does it."""
        new = self._snapshot(config)
        self.registrar.forget_changed(self.pipeline.snapshot, new)
        self.pipeline.use(new)

    def registered(
        self, password: str = "secret", *, expires: int = 120, contact: str = CONTACT, cseq: int = 2
    ) -> Response:
        """REGISTER from the phone, the 401 answered with ``password``; the final answer,
        committed by this node's writer."""
        flow = Flow(Transport.UDP, ("127.0.0.1", 5060), PHONE)
        challenge = self.registrar.register(
            register(contact, expires=expires, cseq=cseq - 1), flow, time.time()
        )
        assert challenge.status == 401
        value = challenge.headers.get("WWW-Authenticate")
        assert value is not None
        auth = build_authorization(
            value, method="REGISTER", uri="sip:127.0.0.1:5060", username="pbx", password=password
        )
        request = register(contact, expires=expires, cseq=cseq, authorization=auth)
        answer = self.registrar.register(request, flow, time.time())
        assert self.writer.flush()
        return answer

    def contacts(self) -> list[str]:
        return [b.contact for b in self.bindings.contacts("pbx", time.time())]

    def indexed(self) -> list[str]:
        """Every binding of the account the index holds, used or not."""
        return [b.contact for b in self.bindings.every() if b.account_id == "pbx"]

    def phone_calls(self) -> int | None:
        """The status a call from the phone's address gets at admission (None: admitted)."""
        return phone_calls(self.pipeline)


async def until(condition: Callable[[], bool], within: float = WITHIN) -> float:
    """Seconds until ``condition`` holds (checked on the loop, where changes are applied);
    fails after ``within``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            pytest.fail(f"not within {within} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def listeners(database: str) -> int:
    """Listening connections open on ``database``."""
    with connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND datname = current_database()",
            (LISTENER,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def listener_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "registrar-listener"]


def nodes(tmp_path: Path, database: str, *configs: str) -> list[Node]:
    return [Node(tmp_path, database, config) for config in configs]


@contextlib.asynccontextmanager
async def started(tmp_path: Path, database: str, *configs: str) -> AsyncIterator[list[Node]]:
    """A node per configuration, started in order, closed in order at the end."""
    made = nodes(tmp_path, database, *configs)
    try:
        for node in made:
            await node.started()
        yield made
    finally:
        for node in made:
            node.close()


def test_a_contact_registered_through_one_node_is_called_through_another(
    tmp_path: Path, database: str
) -> None:
    async def main() -> None:
        async with started(tmp_path, database, CONFIG, CONFIG) as (a, b):
            assert b.contacts() == []
            assert b.phone_calls() == 407
            assert a.registered().status == 200
            await until(lambda: b.contacts() == [URI])
            assert b.phone_calls() is None  # authorised by the registration, as at A
            assert b.learned == [URI]  # its source trusted by B's guard too
            (binding,) = b.bindings.contacts("pbx", time.time())
            assert binding == a.bindings.contacts("pbx", time.time())[0]  # fingerprint too

    asyncio.run(main())


def test_an_unregister_through_one_node_removes_the_contact_from_another(
    tmp_path: Path, database: str
) -> None:
    async def main() -> None:
        async with started(tmp_path, database, CONFIG, CONFIG) as (a, b):
            assert b.registered().status == 200  # through B this time
            await until(lambda: a.contacts() == [URI])
            assert a.registered(expires=0, cseq=4).status == 200  # unregistered through A
            assert a.contacts() == []
            await until(lambda: b.indexed() == [])
            assert b.phone_calls() == 407
            assert load(database, time.time()) == []  # a tombstone row, not a live one

    asyncio.run(main())


def test_a_reload_rotating_the_password_on_one_node_drops_the_contact_on_another(
    tmp_path: Path, database: str
) -> None:
    async def main() -> None:
        async with started(tmp_path, database, CONFIG, CONFIG) as (a, b):
            assert b.registered().status == 200
            await until(lambda: a.contacts() == [URI])
            a.reload(ROTATED)  # A first: its writer deletes the row, and B hears of it
            assert a.writer.flush()
            await until(lambda: b.indexed() == [])
            assert b.phone_calls() == 407

    asyncio.run(main())


def test_a_notice_the_table_does_not_bear_out_is_ignored(tmp_path: Path, database: str) -> None:
    """Any role that may connect may NOTIFY: a forged put (an attacker's contact, with the
    fingerprint a real notice showed) and a forged removal change nothing; the real change
    after them still arrives."""
    from softswitch.registrar.store import CHANNEL, gone_notice, put_notice

    async def main() -> None:
        async with started(tmp_path, database, CONFIG, CONFIG) as (a, b):
            assert a.registered().status == 200
            await until(lambda: b.contacts() == [URI])
            (real,) = b.bindings.contacts("pbx", time.time())
            assert real.credentials  # what a listener sees, and a forger could replay
            forged = dataclasses.replace(
                real, contact="<sip:pbx@198.51.100.66:5060>", registered_at=real.registered_at + 1
            )
            with connect(database) as conn:
                for notice in (put_notice(forged), gone_notice("pbx", real.contact, time.time())):
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(notice)))
                conn.commit()
            await until(lambda: b.sync.unbacked == 2)
            assert b.contacts() == [URI]  # neither the forged contact nor the forged removal
            assert b.learned == [URI]  # the forged source not trusted
            assert a.registered(contact="<sip:pbx@192.168.1.21:5060>", cseq=4).status == 200
            await until(lambda: len(b.contacts()) == 2)  # a real change after them still arrives

    asyncio.run(main())


def test_a_notice_cannot_relabel_a_bindings_credentials(tmp_path: Path, database: str) -> None:
    """B already runs the rotated password; A's REGISTER with the old one reaches B unused.
    A forged notice of the very same row with B's current fingerprint (seen on the channel,
    or "") is not borne out by the table, which keeps the fingerprint the REGISTER passed."""
    from softswitch.registrar.credentials import fingerprints
    from softswitch.registrar.store import CHANNEL, put_notice

    async def main() -> None:
        async with started(tmp_path, database, CONFIG, ROTATED) as (a, b):
            assert a.registered("secret").status == 200
            await until(lambda: b.indexed() == [URI])
            assert b.contacts() == []
            (old,) = [x for x in b.bindings.every() if x.account_id == "pbx"]
            current = fingerprints(b.pipeline.snapshot.config.accounts)["pbx"]
            assert old.credentials != current
            with connect(database) as conn:
                for label in (current, ""):
                    forged = dataclasses.replace(old, credentials=label)
                    conn.execute(
                        "SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(put_notice(forged)))
                    )
            await until(lambda: b.sync.unbacked == 2)
            assert b.contacts() == []
            assert b.phone_calls() == 407

    asyncio.run(main())


def test_a_reload_on_a_node_not_yet_rotated_leaves_the_other_nodes_registrations(
    tmp_path: Path, database: str
) -> None:
    """A rollout reaches A first: the phone registers through A with the new password; B,
    still on the old one, reloads for another reason. B drops the binding from its own index
    (it cannot judge it) but leaves the row, and A keeps the contact."""

    async def main() -> None:
        async with started(tmp_path, database, ROTATED, CONFIG) as (a, b):
            assert a.registered("rotated").status == 200
            await until(lambda: b.indexed() == [URI])  # arrived; B does not use it
            assert b.contacts() == []
            b.reload(CONFIG)  # an unrelated reload: B still has the old password
            assert b.writer.flush()
            assert b.indexed() == []
            await asyncio.sleep(0.3)  # a removal's notice, had B sent one, is back by now
            assert a.contacts() == [URI]
            assert [x.contact for x in load(database, time.time())] == [URI]

    asyncio.run(main())


def test_notices_that_do_not_decode_are_skipped_alone(tmp_path: Path, database: str) -> None:
    """Junk on the channel (anyone who may connect may send it) is counted and skipped: no
    reconnection, no read of the table, and a real change in the same burst still lands. A
    removal dated far ahead is junk too (it would drop any later binding of its contact)."""
    from softswitch.registrar.store import CHANNEL

    async def main() -> None:
        async with started(tmp_path, database, CONFIG, CONFIG) as (a, b):
            reads = b.sync.reads
            junk = [
                "junk",
                "[]",
                '["put", [["x"], "c", 1, 1, "i", 1, "udp", "ip", 1, false, 1, "", ""]]',
                '["put", ["pbx", "c", "1", 1, "i", 1, "udp", "ip", 1, false, 1, "", ""]]',
                '["gone", "pbx", "sip:pbx@192.168.1.20:5060", 1e300]',
                '["gone", ["pbx"], "c", 1]',
            ]
            with connect(database) as conn:
                for payload in junk:
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            assert a.registered().status == 200
            await until(lambda: b.contacts() == [URI])
            await until(lambda: b.sync.undecoded == len(junk))
            assert b.sync.reads == reads  # no reconnection, no read of the table

    asyncio.run(main())


def test_a_user_agent_the_table_cannot_hold_as_sent_is_kept_escaped(
    tmp_path: Path, database: str
) -> None:
    """Bytes that are not UTF-8 and a NUL in a phone's User-Agent: kept escaped, in the index
    and the table alike (they stopped the writer, or lost its whole batch, before)."""

    async def main() -> None:
        async with started(tmp_path, database, CONFIG, CONFIG) as (a, b):
            sent = "SIPp \udcff\x00/3.7"  # as the parser keeps an undecodable byte
            original = a.registrar.register

            def with_agent(request: Request, flow: Flow, now: float) -> Response:
                request.headers.set("User-Agent", sent)
                return original(request, flow, now)

            a.registrar.register = with_agent  # type: ignore[method-assign]
            assert a.registered().status == 200
            (row,) = load(database, time.time())
            assert row.user_agent == "SIPp \\xff\\x00/3.7"
            await until(lambda: b.contacts() == [URI])
            (there,) = b.bindings.contacts("pbx", time.time())
            assert there.user_agent == row.user_agent

    asyncio.run(main())


def test_a_binding_under_credentials_the_other_node_does_not_have_is_not_used_there(
    tmp_path: Path, database: str
) -> None:
    """B already runs the rotated password, A not yet: A's REGISTER with the old one reaches
    B's index, and B neither routes to it nor authorises calls by it; once A too registers
    with the new one (its reload), B uses that."""

    async def main() -> None:
        async with started(tmp_path, database, CONFIG, ROTATED) as (a, b):
            assert a.registered("secret").status == 200
            await until(lambda: b.indexed() == [URI])  # it did arrive
            assert b.contacts() == []
            assert b.phone_calls() == 407
            assert b.learned == []  # its source not trusted either
            a.reload(ROTATED)
            assert a.registered("rotated", cseq=4).status == 200
            await until(lambda: b.contacts() == [URI])
            assert b.phone_calls() is None

    asyncio.run(main())


def test_a_change_too_big_for_a_notice_makes_the_other_nodes_read_the_table(
    tmp_path: Path, database: str
) -> None:
    """``NOTIFY`` takes 8000 bytes: a binding that would not fit is announced as "read
    everything", and the other node reads the row from the table."""

    async def main() -> None:
        (b,) = nodes(tmp_path, database, CONFIG)
        writer = BindingWriter(database)  # another node's
        try:
            await b.started()
            now = time.time()
            big = binding(URI, expires_at=now + 120, registered_at=now)
            big = dataclasses.replace(big, user_agent="x" * 9000)
            writer.put([big])
            assert writer.flush()
            await until(lambda: b.contacts() == [URI])
            assert b.sync.reads == 2
            assert b.bindings.contacts("pbx", time.time())[0].user_agent == big.user_agent
        finally:
            writer.close()
            b.close()

    asyncio.run(main())


class Outage:
    """The connection B listens on, which the test can cut and keep from coming back."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.up = threading.Event()
        self.up.set()
        self.pids: list[int] = []

    def connect(self) -> Any:
        if not self.up.is_set():
            raise OSError("the network is down (test)")
        conn = connect(self.database, application=LISTENER)
        self.pids.append(conn.info.backend_pid)
        return conn

    def cut(self) -> None:
        self.up.clear()
        with connect(self.database) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (self.pids[-1],))


def test_a_node_that_lost_its_connection_catches_up_after_reconnecting(
    tmp_path: Path, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """While B cannot listen, A registers one contact and unregisters another: B hears of
    neither then, and has both changes once it is back (the table read again)."""
    old_contact, old_uri = "<sip:pbx@192.168.1.21:5060>", "sip:pbx@192.168.1.21:5060"

    async def main() -> None:
        outage = Outage(database)
        a = Node(tmp_path, database)
        b = Node(tmp_path, database, connect=outage.connect)
        try:
            await a.started()
            await b.started()
            assert a.registered(contact=old_contact).status == 200
            await until(lambda: b.contacts() == [old_uri])
            outage.cut()
            await until(lambda: "not listening" in caplog.text)
            assert a.registered(contact=CONTACT, cseq=4).status == 200
            assert a.registered(contact=old_contact, expires=0, cseq=6).status == 200
            await asyncio.sleep(0.5)
            assert b.contacts() == [old_uri]  # missed while down
            outage.up.set()
            await until(lambda: b.contacts() == [URI])
            assert b.sync.reads >= 2
            assert "listening to the other nodes' changes again" in caplog.text
            # And it listens again: the next change arrives as a notice.
            assert a.registered(contact=CONTACT, expires=0, cseq=8).status == 200
            await until(lambda: b.indexed() == [])
        finally:
            a.close()
            b.close()

    asyncio.run(main())


def test_every_worker_of_a_node_hears_the_other_nodes(tmp_path: Path, database: str) -> None:
    """Node B runs two workers (a journal between them), each with its own listener: A's
    REGISTER reaches both; a REGISTER through one of B's workers reaches A, and B's other
    worker by the journal, unchanged by the notice that follows."""

    async def main() -> None:
        shared = SharedState(workers=2, ids=1)

        def worker(index: int) -> Node:
            bindings = SharedRegistrations(
                shared.bindings, index, lambda: load(database, time.time())
            )
            return Node(tmp_path, database, bindings=bindings)

        a, b0, b1 = Node(tmp_path, database), worker(0), worker(1)
        try:
            for node in (a, b0, b1):
                await node.started()
            assert a.registered().status == 200
            await until(lambda: b0.contacts() == [URI] and b1.contacts() == [URI])
            assert b0.phone_calls() is None
            assert b1.phone_calls() is None
            assert b1.registered(expires=0, cseq=4).status == 200  # through B's worker 1
            assert b0.contacts() == []  # the journal, at once
            await until(lambda: a.indexed() == [])
            await until(lambda: b0.sync.applied >= 2 and b1.sync.applied >= 2)
            assert b0.indexed() == b1.indexed() == []
        finally:
            for node in (a, b0, b1):
                node.close()

    asyncio.run(main())


def test_stopping_leaves_no_thread_or_connection(tmp_path: Path, database: str) -> None:
    async def main() -> None:
        (a,) = nodes(tmp_path, database, CONFIG)
        await a.started()
        assert len(listener_threads()) == 1
        assert listeners(database) == 1
        a.close()
        a.close()  # idempotent
        assert listener_threads() == []
        await until(lambda: listeners(database) == 0)

    asyncio.run(main())


def test_two_switches_on_one_postgres_share_registrations(tmp_path: Path, database: str) -> None:
    """``Switch.start`` listens when its database is PostgreSQL, ``Switch.stop`` stops."""
    (tmp_path / "sell.csv").write_text("prefix,rate\n44,0.10\n")
    path = tmp_path / "switch.toml"
    text = CONFIG.replace('database = "cdr.sqlite"', f'database = "{database}"')
    path.write_text(text + '\n[management]\nlisten = "off"\n')

    async def main() -> None:
        config = load_config(path)
        switches = [Switch(config, build_snapshot(config), path) for _ in range(2)]
        a, b = switches
        try:
            for switch in switches:
                await switch.start(["udp:127.0.0.1:0"])
            assert len(listener_threads()) == 2
            flow = Flow(Transport.UDP, ("127.0.0.1", 5060), PHONE)
            challenge = a.registrar.register(register(CONTACT, expires=120), flow, time.time())
            value = challenge.headers.get("WWW-Authenticate")
            assert value is not None
            auth = build_authorization(
                value,
                method="REGISTER",
                uri="sip:127.0.0.1:5060",
                username="pbx",
                password="secret",
            )
            request = register(CONTACT, expires=120, cseq=2, authorization=auth)
            assert a.registrar.register(request, flow, time.time()).status == 200
            await until(lambda: [c.contact for c in b.registrations.contacts("pbx", time.time())]
                        == [URI])  # fmt: skip
        finally:
            for switch in switches:
                await switch.stop(0)
        assert listener_threads() == []

    asyncio.run(main())
