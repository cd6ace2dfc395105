"""The API's frame: its description, its token, its errors, its configuration and its
start and stop with the switch."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from management_support import TOKEN, World, run, write_config

from softswitch.call.snapshot import build_snapshot
from softswitch.cli import main
from softswitch.config import ConfigError, ManagementConfig, demo_config, load_config
from softswitch.management import ENDPOINTS, build_app
from softswitch.management.app import DESCRIPTION
from softswitch.management.table import Endpoint
from softswitch.proxy.server import Switch


def stub(token: str | None = None) -> Switch:
    """What the frame reads of a switch: the token."""
    return cast(
        Switch, SimpleNamespace(config=SimpleNamespace(management=SimpleNamespace(token=token)))
    )


async def boom(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("secret detail /etc/passwd")


def with_client(
    app: web.Application,
    body: Callable[[TestClient[web.Request, web.Application]], Awaitable[None]],
) -> None:
    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(body(client), 10)

    asyncio.run(scenario())


def test_the_description_lists_every_route_and_only_those() -> None:
    app = build_app(stub())
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    spec = app[DESCRIPTION]
    described = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    assert served == described
    assert len(served) == len(ENDPOINTS)
    for path, ops in spec["paths"].items():
        for op in ops.values():
            names = [p["name"] for p in op["parameters"] if p["in"] == "path"]
            assert [f"{{{n}}}" in path for n in names] == [True] * len(names)
            token = set() if op.get("security") == [] else {"401"}  # the dashboard's files
            assert {"200", "500", *token} <= set(op["responses"])
    assert spec["openapi"].startswith("3.")
    operation_ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_the_description_is_valid_openapi() -> None:
    from openapi_spec_validator import validate  # a test tool (the [test] extra)

    validate(build_app(stub())[DESCRIPTION])


def test_errors_are_json_and_never_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    crash = Endpoint("GET", "/api/crash", boom, "crash", "test")
    app = build_app(stub(), (*ENDPOINTS, crash))

    async def body(client: TestClient[web.Request, web.Application]) -> None:
        r = await client.get("/api/crash")
        assert (r.status, await r.json()) == (
            500,
            {"error": "internal error in the switch; the switch's log has the details"},
        )
        r = await client.get("/api/nowhere")
        assert r.status == 404
        assert (await r.json())["error"].startswith("no such endpoint: GET /api/nowhere")
        r = await client.put("/api/reload")
        assert (r.status, r.headers["Allow"]) == (405, "POST")
        assert (await r.json()) == {"error": "PUT is not allowed on /api/reload (allowed: POST)"}
        r = await client.get("/api/openapi.json")
        assert r.status == 200
        assert (await r.json())["info"]["title"] == "softswitch management API"

    with caplog.at_level(logging.ERROR, logger="softswitch.management"):
        with_client(app, body)
    assert caplog.messages == ["management API: GET /api/crash failed"]
    assert "secret detail" in caplog.text  # the traceback is the switch's, in its log


def test_a_token_guards_every_endpoint() -> None:
    app = build_app(stub(TOKEN))

    async def body(client: TestClient[web.Request, web.Application]) -> None:
        for path in ("/api/openapi.json", "/metrics", "/api/calls"):
            r = await client.get(path)
            assert (r.status, r.headers["WWW-Authenticate"]) == (401, 'Bearer realm="softswitch"')
            assert await r.json() == {"error": "missing token: send 'Authorization: Bearer TOKEN'"}
            r = await client.get(path, headers={"Authorization": "Bearer wrong"})
            assert (r.status, await r.json()) == (401, {"error": "wrong token"})
            r = await client.get(path, headers={"Authorization": f"Basic {TOKEN}"})
            assert r.status == 401
        r = await client.get("/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200

    with_client(app, body)


def test_a_running_switch_with_a_token(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        assert (await w.get("/api/gateways"))[0] == 200
        code, refused = await w.get("/api/gateways", headers={"Authorization": "Bearer x"})
        assert (code, refused) == (401, {"error": "wrong token"})
        code, content_type, _ = await w.text("/metrics")
        assert (code, content_type) == (200, "text/plain")

    run(tmp_path, body, token=TOKEN)

    async def anonymous(w: World) -> None:
        assert (await w.get("/api/calls"))[0] == 401
        code, _, _ = await w.text("/metrics")
        assert code == 401

    run(tmp_path, anonymous, token=TOKEN, send_token=False)


def test_management_configuration(tmp_path: Path) -> None:
    assert ManagementConfig().listen == "127.0.0.1:8080"
    assert ManagementConfig(listen="OFF").address is None
    assert ManagementConfig(listen="[::1]:0").address == ("::1", 0)
    assert ManagementConfig(listen="localhost:80").loopback
    assert not ManagementConfig(listen="example.com:80", token="t").loopback
    good = write_config(tmp_path).read_text()
    listen = 'listen = "127.0.0.1:0"'
    ok = {'listen = "0.0.0.0:8080"\ntoken = "t"', 'listen = "off"', 'listen = "[::1]:8080"'}
    for text in ok:
        (tmp_path / "switch.toml").write_text(good.replace(listen, text))
        load_config(tmp_path / "switch.toml")
    refused = {
        'listen = "0.0.0.0:8080"': "switch.toml: management.token: required when listen"
        " ('0.0.0.0:8080') is not a loopback address",
        'listen = "8080"': "management.listen: must look like 127.0.0.1:8080",
        'listen = "127.0.0.1:65536"': "management.listen: port must be a number from 0 to 65535",
        'listen = "::1:80"': "management.listen: write an IPv6 address in brackets",
        "listen = 8080": "management.listen: must be a string, got a number (8080)",
        f'{listen}\ntoken = ""': "management.token: must not be empty",
        f"{listen}\nlisen = 1": "management.lisen: unknown key (did you mean 'listen'?)",
    }
    for text, reason in refused.items():
        (tmp_path / "switch.toml").write_text(good.replace(listen, text))
        with pytest.raises(ConfigError) as e:
            load_config(tmp_path / "switch.toml")
        assert reason in str(e.value), (text, str(e.value))


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_management_port_in_use_is_named(tmp_path: Path, taken: int) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("127.0.0.1:0", f"127.0.0.1:{taken}"))
    config = load_config(path)
    switch = Switch(config, build_snapshot(config), path)

    async def scenario() -> None:
        try:
            await switch.start(["udp:127.0.0.1:0"])
        finally:
            await switch.stop(0)

    with pytest.raises(OSError, match="management") as e:
        asyncio.run(scenario())
    assert (
        str(e.value) == f"cannot listen on [management] 127.0.0.1:{taken}: address already in use"
    )


def test_off_serves_nothing_and_the_demo_cannot_reload(tmp_path: Path) -> None:
    demo = demo_config(tmp_path)
    assert demo.management.listen == "127.0.0.1:8080"  # the quick start's API
    config = dataclasses.replace(demo, management=ManagementConfig(listen="off"))
    switch = Switch(config, build_snapshot(config), None)

    def bound() -> tuple[str, int] | None:
        return switch.management.address

    async def scenario() -> Any:
        try:
            await switch.start(["udp:127.0.0.1:0"])
            assert bound() is None
            await switch.management.start(ManagementConfig(listen="127.0.0.1:0"))
            address = bound()
            assert address is not None
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"http://127.0.0.1:{address[1]}/api/reload") as r,
            ):
                return r.status, await r.json()
        finally:
            await switch.stop(0)
            assert bound() is None

    assert asyncio.run(scenario()) == (
        409,
        {"error": "the embedded demo has no configuration file to reload"},
    )


def test_the_run_flag_overrides_listen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``softswitch run --management``: checked like the key, and never off the loopback
    without the file's token."""
    with pytest.raises(SystemExit) as e:
        main(["run", "--management", "nowhere"])
    assert e.value.code == 2
    assert "argument --management: must look like 127.0.0.1:8080" in capsys.readouterr().err
    path = write_config(tmp_path)
    assert main(["run", "--config", str(path), "--management", "0.0.0.0:8080"]) == 2
    assert capsys.readouterr().err == (
        "error: --management 0.0.0.0:8080: off the loopback the API needs [management] token"
        " in the configuration\n"
    )


def test_a_browsers_cross_origin_change_is_refused() -> None:
    """No token on loopback must not let a web page disable gateways (CSRF)."""
    app = build_app(stub())

    async def body(client: TestClient[web.Request, web.Application]) -> None:
        evil = {"Origin": "http://evil.example"}
        r = await client.post("/api/reload", headers=evil)
        assert (r.status, await r.json()) == (
            403,
            {"error": "cross-origin request from http://evil.example refused"},
        )
        r = await client.get("/api/openapi.json", headers=evil)  # reading: unaffected
        assert r.status == 200
        own = {"Origin": f"http://{client.host}:{client.port}"}
        r = await client.delete("/api/blocks/not-an-ip", headers=own)  # same origin: passes
        assert r.status != 403

    with_client(app, body)
