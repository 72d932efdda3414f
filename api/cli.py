"""``vigil api``: serve the API and console; ``vigil api user-add`` and ``key-add`` for set-up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import Iterator

from vigil.config import Settings, load_settings

FACTORY = "api.cli:app_from_environment"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``vigil api`` and its actions."""
    parser = subparsers.add_parser("api", help="serve the HTTP API and the live console")
    parser.add_argument("--host", help="bind address (default: api.host)")
    parser.add_argument("--port", type=int, help="port (default: api.port)")
    parser.add_argument("--workers", type=int, help="worker processes (default: api.workers)")
    parser.set_defaults(handler=_serve)
    actions = parser.add_subparsers(dest="api_command", metavar="ACTION")

    user = actions.add_parser("user-add", help="create a user (password from $VIGIL_PASSWORD)")
    user.add_argument("username")
    user.add_argument(
        "--role",
        required=True,
        choices=[
            "admin",
            "regulator",
            "firm_manager",
            "dispatcher",
            "technician",
            "safety_manager",
            "manufacturer",
        ],
    )
    user.add_argument("--display-name", default="")
    for scope in ("firm", "technician", "user-unit", "manufacturer", "jurisdiction"):
        user.add_argument(f"--{scope}-id", type=int)
    user.set_defaults(handler=_user_add)

    key = actions.add_parser("key-add", help="create an API key for a user; prints it once")
    key.add_argument("username")
    key.add_argument("--name", required=True, help="what the key is for")
    key.set_defaults(handler=_key_add)


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The configured database, or the embedded one."""
    if settings.database_url:
        yield settings.database_url
        return
    from vigil.embedded import endpoints

    with endpoints(settings.model_copy(update={"mqtt_url": "mqtt://unused"})) as where:
        yield where.database_url


def app_from_environment() -> object:
    """The app of one uvicorn worker, configured from ``VIGIL_*`` like every process."""
    from api.app import create_app
    from vigil.clock import make_clock

    settings = load_settings()
    if not settings.database_url:
        raise SystemExit("vigil api: set VIGIL_DATABASE_URL for worker processes")
    clock = make_clock(
        kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
    )
    return create_app(database_url=settings.database_url, clock=clock)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    host = args.host or settings.api.host
    port = settings.api.port if args.port is None else args.port
    workers = args.workers or settings.api.workers
    with _database(settings) as database_url:
        os.environ["VIGIL_DATABASE_URL"] = database_url
        if args.config:
            os.environ["VIGIL_CONFIG"] = args.config
        print(f"Vigil API on http://{host}:{port}/ (console), docs at /docs", flush=True)
        uvicorn.run(
            FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=3,
        )
    return 0


def _user_add(args: argparse.Namespace, settings: Settings) -> int:
    from api.auth import service
    from vigil.db.pool import aconnect

    password = os.environ.get("VIGIL_PASSWORD") or getpass.getpass(
        f"password for {args.username}: "
    )

    async def add(database_url: str) -> None:
        async with await aconnect(database_url, autocommit=True) as conn:
            user = await service.create_user(
                conn,
                username=args.username,
                password=password,
                role=args.role,
                display_name=args.display_name,
                firm_id=args.firm_id,
                technician_id=args.technician_id,
                user_unit_id=args.user_unit_id,
                manufacturer_id=args.manufacturer_id,
                jurisdiction_id=args.jurisdiction_id,
            )
        print(f"user {user.username} ({user.role.value}) created, id {user.id}")

    with _database(settings) as database_url:
        try:
            asyncio.run(add(database_url))
        except service.UserError as exc:
            print(f"vigil api user-add: {exc}", file=sys.stderr)
            return 2
    return 0


def _key_add(args: argparse.Namespace, settings: Settings) -> int:
    from api.auth import service
    from vigil.clock import RealClock
    from vigil.db.pool import aconnect

    async def add(database_url: str) -> str | None:
        async with await aconnect(database_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT id FROM users WHERE username = %s", (args.username,))
            row = await cur.fetchone()
            if row is None:
                return None
            created = await service.create_api_key(
                conn, user_id=row["id"], name=args.name, now=RealClock().now(), expires_at=None
            )
            return created.key

    with _database(settings) as database_url:
        key = asyncio.run(add(database_url))
    if key is None:
        print(f"vigil api key-add: no user {args.username!r}", file=sys.stderr)
        return 2
    print(key)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``vigil api`` from this module (``python -m api.cli``)."""
    parser = argparse.ArgumentParser(prog="vigil")
    parser.add_argument("--config")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args, load_settings(args.config))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
