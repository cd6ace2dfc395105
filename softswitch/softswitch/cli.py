"""The ``softswitch`` command.

``softswitch run --config FILE`` starts the switch; without ``--config`` it starts the embedded
demo on loopback (one account by IP, two carriers, CDRs under ``./var/softswitch`` or
``$XDG_STATE_HOME/softswitch``) so the first command shows a working switch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from softswitch import __version__
from softswitch.commands import add_subcommands, dispatch
from softswitch.transport import Transport, loop_factory

__all__ = ["main"]

logger = logging.getLogger("softswitch")
DEFAULT_LISTEN = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]


def parse_listen(text: str) -> tuple[Transport, tuple[str, int]]:
    """``udp:127.0.0.1:5060`` / ``tcp:[::1]:5070`` into a transport and an address."""
    proto, sep, rest = text.partition(":")
    host, colon, port = rest.rpartition(":")
    if not sep or not colon or proto.lower() not in ("udp", "tcp") or not port.isdigit():
        raise ValueError(f"listen address must look like udp:127.0.0.1:5060, got {text!r}")
    transport = Transport.UDP if proto.lower() == "udp" else Transport.TCP
    return transport, (host.strip("[]"), int(port))


def run_switch(args: argparse.Namespace) -> int:
    """``softswitch run``: the configured switch, or the embedded demo without ``--config``."""
    from softswitch.config import ConfigError, demo_config, demo_state_dir, load_config
    from softswitch.proxy.server import serve

    config_path = Path(args.config) if args.config else None
    try:
        for item in args.listen or ():
            parse_listen(item)
        config = load_config(config_path) if config_path else demo_config(demo_state_dir())
        new_loop = loop_factory()
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"error: configuration refused:\n{e}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(serve(config, config_path=config_path, listen=args.listen))
    except ConfigError as e:  # a deck that does not load
        print(f"error: configuration refused:\n{e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="softswitch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the switch (the embedded demo without --config)")
    run.add_argument("--config", metavar="FILE", help="the switch's TOML configuration")
    run.add_argument(
        "--listen",
        action="append",
        metavar="PROTO:HOST:PORT",
        help="where to listen (repeatable; default: [server] listen of the configuration)",
    )
    run.add_argument("--log-level", default="WARNING")
    add_subcommands(commands)  # check-config, route, cdr
    args = parser.parse_args(argv)
    if args.command != "run":
        try:
            status = dispatch(args)
        except BrokenPipeError:
            # ``softswitch cdr | head``: the reader has what it wanted. Point stdout at
            # /dev/null so the interpreter's final flush does not fail a second time.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # as a shell reports a command killed by SIGPIPE
        assert status is not None, f"no handler for {args.command}"
        return status
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    return run_switch(args)


if __name__ == "__main__":
    sys.exit(main())
