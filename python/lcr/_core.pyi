"""Type stubs for the Rust core; checked against the compiled module with mypy.stubtest."""

import datetime
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol, final, overload

__all__ = [
    "Candidate",
    "Rate",
    "RateBatch",
    "RateDeck",
    "Rejection",
    "RouteResult",
    "RouteTable",
]

@final
class Rate:
    @property
    def prefix(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def rate(self) -> Decimal: ...
    @property
    def connect_fee(self) -> Decimal: ...
    @property
    def initial_increment(self) -> int: ...
    @property
    def subsequent_increment(self) -> int: ...
    @property
    def effective_from(self) -> datetime.datetime | None: ...
    @property
    def effective_to(self) -> datetime.datetime | None: ...
    @property
    def precision(self) -> int: ...
    def billed_seconds(self, duration_s: int) -> int: ...
    def cost(self, duration_s: int) -> Decimal: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class RateBatch(Sequence[Rate | None]):
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, key: int, /) -> Rate | None: ...
    @overload
    def __getitem__(self, key: slice, /) -> list[Rate | None]: ...
    def matched(self) -> int: ...

@final
class RateDeck:
    @staticmethod
    def from_csv(
        path: str | os.PathLike[str],
        *,
        columns: Mapping[str, str | int] | None = None,
        strict: bool = True,
        precision: int = 6,
        rounding: str = "up",
        delimiter: str = ",",
        has_header: bool = True,
        progress: Callable[[int, int, int], object] | None = None,
    ) -> RateDeck: ...
    @staticmethod
    def from_rows(
        rows: Iterable[Mapping[str, object] | Sequence[object]],
        *,
        strict: bool = True,
        precision: int = 6,
        rounding: str = "up",
    ) -> RateDeck: ...
    def lookup(self, number: str, at: datetime.datetime | None = None) -> Rate | None: ...
    def cost(
        self, number: str, duration_s: int, at: datetime.datetime | None = None
    ) -> Decimal: ...
    def lookup_many(
        self,
        numbers: Iterable[str],
        at: datetime.datetime | Iterable[datetime.datetime] | None = None,
    ) -> RateBatch: ...
    def cost_many(
        self,
        numbers: Iterable[str],
        durations: Iterable[int],
        at: datetime.datetime | Iterable[datetime.datetime] | None = None,
    ) -> list[Decimal | None]: ...
    def rows(self) -> list[Rate]: ...
    @property
    def errors(self) -> list[Any]: ...
    @property
    def path(self) -> str | None: ...
    @property
    def precision(self) -> int: ...
    @property
    def rounding(self) -> str: ...
    @property
    def prefix_count(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...
    def __len__(self) -> int: ...

@final
class Candidate:
    @property
    def gateway(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def deck(self) -> str | None: ...
    @property
    def rate_prefix(self) -> str | None: ...
    @property
    def destination(self) -> str | None: ...
    @property
    def route_prefix(self) -> str: ...
    @property
    def rate(self) -> Decimal | None: ...
    @property
    def route(self) -> int: ...

@final
class Rejection:
    @property
    def gateway(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def route_prefix(self) -> str: ...
    @property
    def rate(self) -> Decimal | None: ...
    @property
    def route(self) -> int: ...
    @property
    def duration(self) -> int | None: ...

@final
class RouteResult:
    @property
    def number(self) -> str: ...
    @property
    def prefix(self) -> str | None: ...
    @property
    def strategy(self) -> str | None: ...
    @property
    def candidates(self) -> tuple[Candidate, ...]: ...
    @property
    def rejected(self) -> tuple[Rejection, ...]: ...
    @property
    def caller_prefix(self) -> str | None: ...
    @property
    def route(self) -> int | None: ...
    def explain(self) -> str: ...

class _SellRate(Protocol):
    def cost(self, duration_s: int, /) -> Decimal: ...

@final
class RouteTable:
    def __new__(
        cls,
        entries: Iterable[Any],
        decks: Mapping[str, RateDeck] | None = None,
        *,
        min_margin: Decimal | str | int | None = None,
        margin_duration: Iterable[int] | None = None,
        window_ids: Sequence[Sequence[int]] | None = None,
    ) -> RouteTable: ...
    def route(
        self,
        number: str,
        at: datetime.datetime | None = None,
        seed: int | str | None = None,
        *,
        exclude: Iterable[str] | None = None,
        sell_rate: Decimal | str | int | None = None,
        caller: str | None = None,
        sell: _SellRate | None = None,
        acd: int | None = None,
        active: Iterable[int] | None = None,
    ) -> RouteResult: ...
    def route_many(
        self,
        numbers: Iterable[str],
        at: datetime.datetime | Iterable[datetime.datetime] | None = None,
        seeds: Iterable[int | str] | None = None,
        *,
        exclude: Iterable[str] | None = None,
        sell_rate: Decimal | str | int | None = None,
        callers: Iterable[str | None] | None = None,
        sell: _SellRate | Iterable[_SellRate | None] | None = None,
        acd: int | Iterable[int | None] | None = None,
        active: Iterable[Iterable[int]] | None = None,
        active_of: Iterable[int] | None = None,
    ) -> list[RouteResult]: ...
    @property
    def deck_names(self) -> list[str]: ...
    def __len__(self) -> int: ...
