"""The ``softswitch`` command.

``softswitch run --config FILE`` starts the switch; without ``--config`` it starts the embedded
demo on loopback (one account by IP, two carriers, CDRs under ``./var/softswitch`` or
``$XDG_STATE_HOME/softswitch``) so the first command shows a working switch.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from softswitch import __version__
from softswitch import config as _config
from softswitch.commands import add_subcommands, dispatch
from softswitch.store.errors import StoreError
from softswitch.transport import Transport, loop_factory
from softswitch.workers import MAX_WORKERS

if TYPE_CHECKING:
    from softswitch.workers.seat import Seat

__all__ = ["main"]

logger = logging.getLogger("softswitch")
DEFAULT_LISTEN = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_listen(text: str) -> tuple[Transport, tuple[str, int]]:
    """``udp:127.0.0.1:5060`` / ``tcp:[::1]:5070`` into a transport and an address.

    The same rules as ``[server] listen``: ValueError for a bad form, a port outside
    1-65535 (never wrapped around to another port) or a host that is no address or name.
    """
    proto, host, port = _config.parse_listen(text)
    transport = Transport.UDP if proto == "udp" else Transport.TCP
    return transport, (host, port)


def _listen_option(text: str) -> str:
    """``--listen``'s type: the text itself once valid, so argparse names the flag if not."""
    try:
        parse_listen(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _management_option(text: str) -> str:
    """``--management``'s type: ``off`` or ``HOST:PORT``, as ``[management] listen``."""
    if text.strip().lower() == "off":
        return "off"
    try:
        _config.parse_http_listen(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.strip()


def _with_management(config: _config.Config, listen: str | None) -> _config.Config:
    """The configuration with ``--management`` in place of ``[management] listen``;
    ValueError when that address is off the loopback and the file sets no token."""
    if listen is None:
        return config
    address = None if listen == "off" else _config.parse_http_listen(listen)
    off_loopback = address is not None and not _config.is_loopback(address[0])
    if off_loopback and config.management.token is None:
        raise ValueError(
            f"--management {listen}: off the loopback the API needs [management] token"
            " in the configuration"
        )
    management = dataclasses.replace(config.management, listen=listen)
    return dataclasses.replace(config, management=management)


def run_switch(args: argparse.Namespace) -> int:
    """``softswitch run``: the configured switch, or the embedded demo without ``--config``."""
    from softswitch.config import ConfigError, demo_config, demo_state_dir, load_config
    from softswitch.proxy.server import serve

    config_path = Path(args.config) if args.config else None
    try:
        config = load_config(config_path) if config_path else demo_config(demo_state_dir())
        config = _with_management(config, args.management)
        new_loop = loop_factory()
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"error: configuration refused:\n{e}", file=sys.stderr)
        return 2
    workers = worker_count(config, args.workers)
    if workers > 1:
        return _supervise(config, config_path, args.listen, workers, new_loop)
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(serve(config, config_path=config_path, listen=args.listen))
    except ConfigError as e:  # a deck that does not load
        print(f"error: configuration refused:\n{e}", file=sys.stderr)
        return 2
    except StoreError as e:  # the database: unreachable, or `softswitch migrate` it first
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # "cannot listen on udp:127.0.0.1:5060: address already in use"
        print(f"softswitch: {e}", file=sys.stderr)
        return 1
    return 0


def worker_count(config: _config.Config, flag: int | None) -> int:
    """Worker processes for this run: ``--workers``, else ``[server] workers``, else one per
    core; at most ``MAX_WORKERS`` (256: ``--workers`` and the file refuse more). Every
    configuration can run on several: limits, credit and registered contacts are shared
    between them (docs/deployment.md)."""
    return flag or config.server.workers or min(os.cpu_count() or 1, MAX_WORKERS)


def _supervise(
    config: _config.Config,
    config_path: Path | None,
    listen: Sequence[str] | None,
    workers: int,
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> int:
    """``softswitch run`` with several workers (``softswitch.workers.supervisor``)."""
    from softswitch.workers.supervisor import Supervisor, run_worker

    def run(cfg: _config.Config, path: Path | None, where: Sequence[str] | None, seat: Seat) -> int:
        return run_worker(cfg, path, where, seat, new_loop)

    logger.info(
        "%d workers: limits, blocks, gateway health, overrides, statistics and live calls"
        " are shared; per worker: quality routing's ASR, pike's packet counts, media relay"
        " metrics (docs/deployment.md#workers)",
        workers,
    )
    try:
        return Supervisor(
            config, workers=workers, run=run, config_path=config_path, listen=listen
        ).run()
    except OSError as e:  # "cannot listen on udp:127.0.0.1:5060: address already in use"
        print(f"softswitch: {e}", file=sys.stderr)
        return 1


def _workers_option(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_WORKERS} (the most workers a switch runs), got {text!r}"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="softswitch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the switch (the embedded demo without --config)")
    run.add_argument("--config", metavar="FILE", help="the switch's TOML configuration")
    run.add_argument(
        "--listen",
        action="append",
        type=_listen_option,
        metavar="PROTO:HOST:PORT",
        help="where to listen (repeatable; default: [server] listen of the configuration)",
    )
    run.add_argument(
        "--management",
        type=_management_option,
        metavar="HOST:PORT|off",
        help="where the management API listens (default: [management] listen of the"
        " configuration, 127.0.0.1:8080)",
    )
    run.add_argument(
        "--workers",
        type=_workers_option,
        metavar="N",
        help="worker processes sharing the listen addresses, at most"
        f" {MAX_WORKERS} (default: [server] workers of the configuration, else one per core;"
        " 1: a single process)",
    )
    run.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LOG_LEVELS,
        help="the least severe messages logged (default: WARNING; any case)",
    )
    add_subcommands(commands)  # check-config, route, cdr, migrate; billing: balance, topup...
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
        level=args.log_level,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    return run_switch(args)


if __name__ == "__main__":
    sys.exit(main())
