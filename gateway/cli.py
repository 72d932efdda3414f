"""``vigil gateway --config FILE``: run an edge gateway until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from vigil.clock import make_clock
from vigil.config import ConfigError, Settings
from vigil.ops import add_metrics_port


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
    add_metrics_port(parser)
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
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    asyncio.run(_run(config, clock, metrics_port=port, metrics_host=settings.metrics_host))
    return 0


async def _run(
    config: object, clock: object, *, metrics_port: int | None, metrics_host: str
) -> None:
    from gateway.service import run_gateway
    from vigil.ops import Health, OpsServer, loop_check

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    health = Health()
    health.add_check("event loop", loop_check(loop))
    server = None
    if metrics_port is not None:
        server = OpsServer(health=health, host=metrics_host, port=metrics_port).start()
        print(f"gateway metrics on http://{metrics_host}:{server.port}/metrics", flush=True)
    try:
        await run_gateway(config=config, clock=clock, stop=stop, health=health)  # type: ignore[arg-type]
    finally:
        if server is not None:
            server.close()
