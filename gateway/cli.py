"""``vigil gateway --config FILE``: run an edge gateway until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from vigil.clock import make_clock
from vigil.config import ConfigError, Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``gateway`` subcommand."""
    parser = sub.add_parser("gateway", help="poll Modbus devices and publish to MQTT")
    parser.add_argument(
        "--config",
        dest="gateway_config",
        required=True,
        metavar="FILE",
        help="gateway configuration (TOML, see docs/gateway.md)",
    )
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.models import load_config

    try:
        config = load_config(args.gateway_config)
    except ConfigError as exc:
        print(f"vigil gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        import sqlite3

        from gateway.store import check_buffer

        print(
            f"{args.gateway_config}: gateway {config.gateway_id}, {len(config.devices)} devices, "
            f"broker {config.settings.broker.url}"
        )
        try:
            print(check_buffer(config.buffer_path))
        except sqlite3.DatabaseError as exc:
            print(f"buffer {config.buffer_path} cannot be read: {exc}", file=sys.stderr)
            return 1
        return 0
    clock = make_clock(
        kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # failures are logged once by us
    asyncio.run(_run(config, clock))
    return 0


async def _run(config: object, clock: object) -> None:
    from gateway.service import run_gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_gateway(config=config, clock=clock, stop=stop)  # type: ignore[arg-type]
