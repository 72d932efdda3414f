"""``vigil api user-add`` and ``vigil api key-add``: set-up actions on users and API keys."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from vigil.config import Settings
from vigil.embedded import database


def add_actions(parser: argparse.ArgumentParser) -> None:
    """Add the set-up actions of ``vigil api`` (the serving itself is ``runtime``'s)."""
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
    key.add_argument(
        "--read-only", action="store_true", help="it may only read (a regulator's always does)"
    )
    key.set_defaults(handler=_key_add)


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

    with database(settings) as database_url:
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
                conn,
                user_id=row["id"],
                name=args.name,
                now=RealClock().now(),
                expires_at=None,
                read_only=args.read_only,
            )
            return created.key

    with database(settings) as database_url:
        key = asyncio.run(add(database_url))
    if key is None:
        print(f"vigil api key-add: no user {args.username!r}", file=sys.stderr)
        return 2
    print(key)
    return 0
