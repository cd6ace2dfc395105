"""The ``softswitch`` command.

``softswitch run`` starts the SIP layer on loopback (the embedded demo default). Until the call
flow (authorisation, routing, failover, CDRs) lands, it answers OPTIONS, the keep-alive that
customers' and carriers' equipment probes with, and refuses INVITEs with 503 and a Reason that
says why, so a caller sees a clean refusal rather than a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from softswitch import __version__
from softswitch.aiosip import Application, IncomingRequest, Request
from softswitch.transport import Transport, loop_factory

__all__ = ["main"]

logger = logging.getLogger("softswitch")
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
DEFAULT_LISTEN = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]


def parse_listen(text: str) -> tuple[Transport, tuple[str, int]]:
    """``udp:127.0.0.1:5060`` / ``tcp:[::1]:5070`` into a transport and an address."""
    proto, sep, rest = text.partition(":")
    host, colon, port = rest.rpartition(":")
    if not sep or not colon or proto.lower() not in ("udp", "tcp") or not port.isdigit():
        raise ValueError(f"listen address must look like udp:127.0.0.1:5060, got {text!r}")
    transport = Transport.UDP if proto.lower() == "udp" else Transport.TCP
    return transport, (host.strip("[]"), int(port))


def build_app() -> Application:
    app = Application(user_agent=f"softswitch/{__version__}")

    @app.route("OPTIONS")
    async def options(request: IncomingRequest, message: Request) -> None:
        await request.reply(200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")])

    @app.route("INVITE")
    async def invite(request: IncomingRequest, message: Request) -> None:
        logger.info("invite refused: no call flow yet", extra={"call_id": message.call_id})
        await request.reply(
            503,
            headers=[("Reason", 'SIP;cause=503;text="call routing is not configured yet"')],
        )

    return app


async def serve(listen: Sequence[str], ready: asyncio.Event | None = None) -> None:
    app = build_app()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for item in listen:
            transport, addr = parse_listen(item)
            bound = await app.run(local_addr=addr, protocol=transport)
            logger.info("listening on %s:%s", transport.name.lower(), bound)
            print(f"softswitch: listening on {transport.name.lower()}:{bound}", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await app.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="softswitch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the switch (demo defaults on loopback)")
    run.add_argument(
        "--listen",
        action="append",
        metavar="PROTO:HOST:PORT",
        help=f"where to listen (repeatable; default {' and '.join(DEFAULT_LISTEN)})",
    )
    run.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    try:
        for item in args.listen or DEFAULT_LISTEN:
            parse_listen(item)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(args.listen or DEFAULT_LISTEN))
    return 0


if __name__ == "__main__":
    sys.exit(main())
