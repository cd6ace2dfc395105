"""The exceptions of ``lcr``, shared by the Rust core and the pure-Python reference.

They live in Python so that both implementations raise the very same classes, and so that a
caller can catch ``lcr.DeckError`` whichever implementation loaded the deck.
"""

from __future__ import annotations

__all__ = ["DeckError", "LcrError", "NoRateError"]


class LcrError(Exception):
    """Anything ``lcr`` refuses: a bad number, a bad deck, an inconsistent routing plan."""


class NoRateError(LcrError, LookupError):
    """A number has no rate in force, so it cannot be costed."""


class DeckError(LcrError):
    """A bad rate deck row (or file): where it is and what is wrong, for the operator to fix.

    ``line`` is 1-based (the header is line 1 of a CSV file; 0 means the file as a whole);
    ``column`` is the column as the file names it, or ``None`` when the whole row is at fault.
    """

    def __init__(self, path: str, line: int, column: str | None, reason: str) -> None:
        super().__init__(path, line, column, reason)
        self.path = path
        self.line = line
        self.column = column
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: "
        if self.column is not None:
            where += f"column {self.column!r}: "
        return where + self.reason
