"""The ``vigil`` command: one entry point, a subcommand per process or tool.

Domain packages contribute their subcommands through a ``cli`` module exposing
``register(subparsers)``; the kernel's own are ``demo`` and ``db``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from api.cli import add_actions as add_api_actions
from vigil.config import ConfigError, Settings, load_settings
from vigil.logs import setup_logging
from vigil.ops import add_metrics_port

# Packages that may add subcommands (gateway, ingest, compliance, api, simulate, bench, audit...).
COMMAND_MODULES = (
    "fleet.cli",
    "gateway.cli",
    "ingest.cli",
    "compliance.cli",
    "alerts.cli",
    "workorders.cli",
    "simulators.cli",
    "runtime.bench",
)

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML settings file (default: $VIGIL_CONFIG)")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="json: one JSON object per line for a log collector (default: log_format)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run everything on this machine")
    demo.add_argument(
        "--pace",
        type=float,
        default=None,
        metavar="FACTOR",
        help="simulated seconds per real second (default: [demo] factor, 10); 1 to follow an "
        "incident at a person's pace",
    )
    demo.set_defaults(handler=_demo)

    engine = sub.add_parser("compliance", help="run the compliance engine (every runner)")
    add_metrics_port(engine)
    engine.set_defaults(handler=_run_engine)

    api = sub.add_parser("api", help="serve the HTTP API and the live console")
    api.add_argument("--host", help="bind address (default: api.host)")
    api.add_argument("--port", type=int, help="port (default: api.port)")
    api.add_argument("--workers", type=int, help="worker processes (default: api.workers)")
    api.set_defaults(handler=_serve_api)
    add_api_actions(api)  # user-add, key-add

    db = sub.add_parser("db", help="database tools")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("migrate", help="apply pending migrations (idempotent)").set_defaults(
        handler=_db_migrate
    )
    db_sub.add_parser("status", help="list migrations and whether they are applied").set_defaults(
        handler=_db_status
    )

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vigil`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"vigil: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.log_format:
        settings = settings.model_copy(update={"log_format": args.log_format})
    setup_logging(level=settings.log_level, format=settings.log_format)
    try:
        return int(args.handler(args, settings) or 0)
    except ConfigError as exc:
        print(f"vigil: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def wait_for_stop_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.demo import run_demo

    if args.pace is not None:
        if not 0 < args.pace <= 3600:
            print("vigil demo: --pace must be above 0 and at most 3600", file=sys.stderr)
            return 2
        demo = settings.demo.model_copy(update={"factor": args.pace})
        settings = settings.model_copy(update={"demo": demo})
    return run_demo(settings)


def _db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from vigil.embedded import database, migrate_and_grant
    from vigil.progress import counted

    if settings.database_url:
        applied = migrate_and_grant(
            admin_url=settings.database_admin_url or settings.database_url,
            app_url=settings.database_url,
            progress=lambda pending: counted(
                pending, desc="migrating", unit="migration", total=len(pending)
            ),
        )
        print(f"applied {len(applied)} migration(s)")
        for migration in applied:
            print(f"  {migration.version:04d}_{migration.name} ({migration.package})")
        return 0
    with database(settings) as database_url:
        print(f"embedded database {database_url} is migrated")
    return 0


def _db_status(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from vigil.db import applied_versions, discover

    if not settings.database_url:
        print("vigil: set VIGIL_DATABASE_URL (or database_url in the config)", file=sys.stderr)
        return 2
    with psycopg.connect(settings.database_url) as conn:
        done = applied_versions(conn)
    for migration in discover():
        mark = "applied" if migration.version in done else "pending"
        print(f"{migration.version:04d}_{migration.name:<30} {migration.package:<12} {mark}")
    return 0


def _serve_api(args: argparse.Namespace, settings: Settings) -> int:
    import os

    import uvicorn

    from vigil.embedded import database

    host = args.host or settings.api.host
    port = settings.api.port if args.port is None else args.port
    workers = args.workers or settings.api.workers
    with database(settings) as database_url:
        # every worker process builds its own app (and pools) from the environment
        os.environ["VIGIL_DATABASE_URL"] = database_url
        if workers > 1:
            from vigil.metrics import use_multiprocess_dir

            use_multiprocess_dir()  # /metrics in any worker adds up every worker's figures
        if args.config:
            os.environ["VIGIL_CONFIG"] = args.config
        print(f"Vigil API on http://{host}:{port}/ (console), docs at /docs", flush=True)
        uvicorn.run(
            "runtime.api:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=3,
        )
    return 0


def _run_engine(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import contextlib

    from runtime import engine
    from vigil.clock import make_clock
    from vigil.embedded import endpoints
    from vigil.ops import Health, OpsServer
    from vigil.resources import open_resources

    clock = make_clock(
        kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
    )
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port

    async def main(database_url: str, mqtt_url: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        health = Health()
        async with (
            open_resources(
                database_url=database_url, mqtt_url=mqtt_url, clock=clock, settings=settings
            ) as resources,
            contextlib.AsyncExitStack() as serving,
        ):
            if port is not None:
                figures = engine.watch(resources=resources, health=health)
                server = OpsServer(
                    health=health, host=settings.metrics_host, port=port, collectors=[figures]
                )
                serving.enter_context(server)
                print(
                    f"compliance metrics on http://{server.host}:{server.port}/metrics", flush=True
                )
            await engine.run(resources=resources, stop=stop, health=health)

    with endpoints(settings) as where:
        asyncio.run(main(where.database_url, where.mqtt_url))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
