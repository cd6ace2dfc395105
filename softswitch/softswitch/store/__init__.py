"""Where the switch's durable records live: SQLite (the default) or PostgreSQL.

``[server] database`` is a file path (SQLite, migrated by the store itself) or a
``postgresql://`` URL (migrated by ``softswitch migrate``). ``opening`` picks the store,
``migrations`` holds the numbered schema of each dialect, ``records`` the records every store
keeps, ``group_commit`` the writer thread both stores share, ``recovery`` the rules for the
calls a dead run left up, and ``postgres`` the PostgreSQL store. ``softswitch.cdr`` is the
SQLite store. This package's ``__init__`` imports nothing, so ``softswitch.cdr`` can use its
modules without a cycle.
"""
