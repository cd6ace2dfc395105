"""A CDR store for tests of the pipeline: the part of ``CdrSink`` it uses, keeping every
record it is given in ``records`` (written at once, nothing on disk)."""

from __future__ import annotations

from concurrent.futures import Future

from softswitch.cdr import CdrRecord

__all__ = ["Sink"]


class Sink:
    """Keeps what the pipeline writes, in order: CDRs of ended and of refused calls."""

    def __init__(self) -> None:
        self.records: list[CdrRecord] = []

    def write(self, record: CdrRecord) -> Future[None]:
        self.records.append(record)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def enqueue(self, record: CdrRecord, debit: object = None) -> None:
        self.records.append(record)
