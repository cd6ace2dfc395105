"""The one exception the switch's start reports as "the database is not usable"."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(RuntimeError):
    """The database cannot be used as it is: unreachable, or its schema does not fit this
    switch (``store.migrations.SchemaError``). The message says what to do."""
