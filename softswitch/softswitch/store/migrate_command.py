"""``softswitch migrate``: bring the database's schema up to this switch's, deliberately.

The SQLite file migrates itself when the switch opens it; a PostgreSQL database shared by
several switches is migrated by an operator running this command once (the switch refuses
to start on an older schema). ``--dry-run`` prints what would be applied and changes
nothing. Exit status 0 when the schema is (or would be) current, 1 for the operator's input
or a database that cannot be migrated.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import TextIO

import psycopg

from .errors import StoreError
from .migrations import describe, latest_version, migrate, pending
from .opening import describe_database, is_postgres_url

__all__ = ["add_subcommand", "migrate_command"]


def migrate_command(
    config_path: str | None,
    database: str | None,
    *,
    dry_run: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Migrate ``database`` (or the configuration's ``[server] database``; without either,
    the embedded demo's file) and print each migration applied."""
    out = out or sys.stdout
    err = err or sys.stderr
    target: str | Path
    if database is not None:
        target = database if is_postgres_url(database) else Path(database)
    else:
        from softswitch.config import ConfigError, demo_config, demo_state_dir, load_config

        try:
            cfg = load_config(config_path) if config_path else demo_config(demo_state_dir())
        except ConfigError as e:
            for problem in e.problems:
                print(f"error: {problem}", file=err)
            return 1
        target = cfg.server.database
    name = describe_database(target)
    try:
        if dry_run:
            todo = pending(target)
            for line in describe(todo):
                print(f"would apply {line}", file=out)
            print(
                f"{name}: {len(todo)} migration(s) to apply, to version {latest_version(target)}"
                " (dry run: nothing changed)",
                file=out,
            )
            return 0
        todo = pending(target)
        applied = migrate(target)
    except (StoreError, OSError, sqlite3.Error, psycopg.Error) as e:
        print(f"error: {name}: {e}", file=err)
        return 1
    done = {m.version: m for m in todo}
    for version in applied:
        print(f"applied {describe([done[version]])[0]}", file=out)
    print(
        f"{name}: at version {latest_version(target)} ({len(applied)} migration(s) applied)",
        file=out,
    )
    return 0


def add_subcommand(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``migrate`` on the ``softswitch`` parser."""
    parser = commands.add_parser(
        "migrate", help="bring the database's schema up to this switch's (PostgreSQL: required)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="its [server] database (default: demo)")
    source.add_argument(
        "--database", metavar="URL", help="a SQLite file or a postgresql://USER@HOST:PORT/DB URL"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be applied; change nothing"
    )
    parser.set_defaults(handler=lambda a: migrate_command(a.config, a.database, dry_run=a.dry_run))
