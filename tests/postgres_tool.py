"""PostgreSQL for the tests: a real server (Debian's ``postgresql``) on loopback, one per session.

``running_postgres()`` makes a cluster with ``initdb`` in a temporary directory (superuser
``softswitch``, ``trust`` authentication, UTF-8), starts ``postgres`` on 127.0.0.1 with a
port from ``loopback_ports`` and its Unix socket in that directory (``-k``), ``fsync`` on
(the durability tests need a real one), and stops it (``pg_ctl stop -m fast``) and removes
the directory afterwards. ``Postgres.database()`` creates a fresh database per test, so
tests never see each other's rows.

PostgreSQL refuses to run as root. When the tests run as root (CI does), the cluster is made
and run as the ``postgres`` user that Debian's package creates (``nobody`` without it)
through ``runuser``, with the directory given to that user.

The binaries are found on PATH, else in ``/usr/lib/postgresql/<version>/bin`` (where
Debian puts them, off PATH). A missing server fails the test under CI (the test command
installs the package) and skips it elsewhere, like ``sipp_tool`` and ``rtpengine_tool``.

The ``postgres`` fixture is session-scoped; ``postgres_tool`` counts its users, so the
conftest of the store tests and the end-to-end test share one server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from loopback_ports import LOCAL, free_port

__all__ = ["Postgres", "pg_bindir", "postgres", "running_postgres"]

SUPERUSER = "softswitch"


def pg_bindir() -> Path:
    """The folder of ``pg_ctl`` and ``initdb``; fail under CI, skip elsewhere."""
    for candidate in (shutil.which("initdb"), shutil.which("pg_ctl")):
        if candidate is not None and (Path(candidate).resolve().parent / "initdb").exists():
            return Path(candidate).resolve().parent

    def version(initdb: str) -> int:
        name = Path(initdb).parent.parent.name  # /usr/lib/postgresql/<version>/bin/initdb
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail("PostgreSQL is not installed and CI is set: install Debian's postgresql")
    pytest.skip("PostgreSQL is not installed (Debian package postgresql)")


def _run_as() -> str | None:
    """The user to run PostgreSQL as when we are root (it refuses root); None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


@dataclass
class Postgres:
    """A running server: its port, socket folder and log."""

    port: int
    socket_dir: Path
    log_path: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{LOCAL}:{self.port}/{dbname}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A fresh cluster on loopback for the duration of the ``with`` (see the module)."""
    bindir = pg_bindir()
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="softswitch-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "postgres.log"
    sockets.mkdir()
    prefix: list[str] = []
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        prefix = ["runuser", "-u", user, "--"]
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run(
            [*prefix, *args], check=True, capture_output=True, timeout=120, cwd=str(root)
        )

    started = False
    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",  # initdb's own files only; the server below runs with fsync on
        )
        options = (
            f"-p {port} -k {sockets} -c listen_addresses={LOCAL} -c fsync=on"
            " -c synchronous_commit=on -c max_connections=60 -c shared_buffers=16MB"
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", options, "start")  # fmt: skip
        started = True
        yield Postgres(port=port, socket_dir=sockets, log_path=log)
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or b"").decode(errors="replace")
        with contextlib.suppress(OSError):
            detail += log.read_text(errors="replace")
        raise RuntimeError(f"starting PostgreSQL failed: {e}\n{detail}") from None
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


class _Shared:
    """The one server of the session and how many session fixtures use it."""

    server: Postgres | None = None
    stack = contextlib.ExitStack()
    users = 0


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The session's PostgreSQL server, started by its first user, stopped after its last."""
    if _Shared.server is None:
        _Shared.server = _Shared.stack.enter_context(running_postgres())
    _Shared.users += 1
    try:
        yield _Shared.server
    finally:
        _Shared.users -= 1
        if _Shared.users == 0:
            _Shared.server = None
            _Shared.stack.close()


@pytest.fixture(name="database", params=["sqlite", "postgres"])
def either_database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The switch's database on either engine: a SQLite file, or a fresh database of the
    session's PostgreSQL migrated to the current schema. A test module that imports it
    runs its tests that take ``database`` on both."""
    if request.param == "sqlite":
        return tmp_path / "cdr.sqlite"
    from softswitch.store.migrations import migrate

    url: str = request.getfixturevalue("postgres").database()
    migrate(url)
    return url
