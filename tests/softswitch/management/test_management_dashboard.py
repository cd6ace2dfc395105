"""The dashboard's server side: its files (public, no CDN, framed by nobody) and the
history behind its charts (``/api/history``), sampled by hand-driven ticks.

The page itself runs in a real browser in ``tests/e2e/test_dashboard.py``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from softswitch.management import build_app
from softswitch.management.dashboard import FILES
from softswitch.management.history import EVERY, POINTS, History
from softswitch.proxy.server import Switch

TOKEN = "t0ken"


class FakeStats:
    """``Statistics.query`` for the switch: CPS per whole second as the test sets it."""

    def __init__(self) -> None:
        self.per_second: dict[int, int] = {}
        self.calls = 0
        self.queries = 0

    def query(self, dimension: str, key: str, window: str, now: float) -> Any:
        assert (dimension, key, window) == ("switch", "all", "5m")
        self.queries += 1
        last = int(now // 1) - 1
        return {
            "attempts": 10,
            "answered": 4,
            "asr": 0.4,
            "acd": 12.5,
            "pdd": {"avg": 1.25},
            "concurrent": {"current": self.calls, "peak": self.calls},
            "cps": {"current": self.per_second.get(last, 0), "peak": 0},
        }


def test_a_point_every_few_seconds_with_the_mean_cps_of_its_seconds() -> None:
    stats = FakeStats()
    wall = [1_800_000_000.0]
    history = History(stats, wall=lambda: wall[0])
    stats.per_second = {99: 1, 100: 2, 101: 3, 102: 4, 103: 5, 104: 6, 105: 10}
    stats.calls = 3
    for second in range(100, 100 + EVERY + 1):  # the first tick only starts the clock
        history.tick(second + 0.05)
        history.tick(second + 0.5)  # twice in one second: that second is counted once
    (point,) = history.points()
    assert point == {
        "t": "2027-01-15T08:00:00.000+00:00",
        "calls": 3,
        "cps": round((1 + 2 + 3 + 4 + 5 + 6) / 6, 3),
        "attempts": 10,
        "answered": 4,
        "asr": 0.4,
        "acd": 12.5,
        "pdd": 1.25,
    }
    # a loop stalled for minutes: one point, not a burst of them
    wall[0] += 300
    history.tick(400.05)
    assert len(history.points()) == 2
    history.tick(401.05)
    assert len(history.points()) == 2
    # ``since``: only newer points; the ring keeps one hour
    assert history.points(since_ms=1_800_000_000_000) == history.points()[1:]
    for second in range(402, 402 + EVERY * (POINTS + 10)):
        history.tick(second + 0.05)
    assert len(history.points()) == POINTS == 3600 // EVERY


def stub(token: str | None) -> Switch:
    return cast(
        Switch, SimpleNamespace(config=SimpleNamespace(management=SimpleNamespace(token=token)))
    )


def with_client(
    app: web.Application,
    body: Callable[[TestClient[web.Request, web.Application]], Awaitable[None]],
) -> None:
    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(body(client), 10)

    asyncio.run(scenario())


def test_the_page_is_served_without_the_token_and_the_data_only_with_it() -> None:
    stats = FakeStats()
    history = History(stats, wall=lambda: 1_800_000_000.0)
    for second in range(100, 100 + EVERY + 1):
        history.tick(second + 0.05)
    app = build_app(stub(TOKEN), history=history)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def body(client: TestClient[web.Request, web.Application]) -> None:
        r = await client.get("/")
        assert (r.status, r.content_type) == (200, "text/html")
        page = await r.text()
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        # everything the page loads is ours, from this origin: no CDN, no external font
        assert re.findall(r'(?:src|href)="(/static/[^"]+)"', page) == [
            "/static/app.css",
            "/static/app.js",
        ]
        assert re.search(r"https?://", page) is None
        for name, content_type in FILES.items():
            r = await client.get(f"/static/{name}")
            assert (r.status, r.content_type) == (200, content_type)
            assert "https://" not in await r.text()
        r = await client.get("/static/..%2Fapp.py")
        assert r.status == 404
        r = await client.get("/static/secret.txt")
        assert (r.status, await r.json()) == (404, {"error": "no dashboard file 'secret.txt'"})
        # the data the page shows needs the token
        assert (await client.get("/api/history")).status == 401
        r = await client.get("/api/history", headers=auth)
        answer = await r.json()
        assert (r.status, answer["every"], len(answer["points"])) == (200, EVERY, 1)
        since = answer["points"][0]["t"]
        r = await client.get("/api/history", params={"since": since}, headers=auth)
        assert (await r.json())["points"] == []
        r = await client.get("/api/history", params={"since": "soon"}, headers=auth)
        assert r.status == 400

    with_client(app, body)

    async def no_statistics(client: TestClient[web.Request, web.Application]) -> None:
        r = await client.get("/api/history")
        assert (r.status, await r.json()) == (503, {"error": "this switch keeps no statistics"})

    with_client(build_app(stub(None)), no_statistics)
