"""Which coroutine answers which SIP method, in the shape ``aiosip`` users already know."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from softswitch.sip import Request

if TYPE_CHECKING:
    from .incoming import IncomingRequest

__all__ = ["Handler", "Router"]

Handler: TypeAlias = "Callable[[IncomingRequest, Request], Awaitable[None]]"
"""``async def handler(request, message)``: ``request`` answers, ``message`` is the SIP request.

The two-argument form is aiosip's; keeping it lets handlers written for aiosip move over with
few edits.
"""

H = TypeVar("H", bound="Callable[[IncomingRequest, Request], Awaitable[None]]")


class Router:
    """Handlers per method. SIP methods are case-sensitive on the wire, but aiosip matched
    them case-insensitively, and no two real methods differ only in case, so keys are
    upper-cased."""

    def __init__(self, routes: Mapping[str, Handler] | None = None) -> None:
        self._routes: dict[str, Handler] = {}
        for method, handler in (routes or {}).items():
            self.add_route(method, handler)

    def add_route(self, method: str, handler: Handler) -> None:
        key = method.upper()
        if key in ("ACK", "CANCEL"):
            raise ValueError(f"{key} is handled by the stack (RFC 3261 9, 17), not a route")
        self._routes[key] = handler

    def route(self, method: str) -> Callable[[H], H]:
        """Decorator form of :meth:`add_route`."""

        def register(handler: H) -> H:
            self.add_route(method, handler)
            return handler

        return register

    def __setitem__(self, method: str, handler: Handler) -> None:
        self.add_route(method, handler)

    def __getitem__(self, method: str) -> Handler:
        return self._routes[method.upper()]

    def __contains__(self, method: object) -> bool:
        return isinstance(method, str) and method.upper() in self._routes

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def get(self, method: str) -> Handler | None:
        return self._routes.get(method.upper())

    @property
    def methods(self) -> list[str]:
        return list(self._routes)
