"""Users, sessions and API keys in the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.auth import security
from api.auth.models import ApiKeyCreated, ApiKeyOut, Principal, Role, UserOut
from vigil.db.rows import first_value

_USER_COLUMNS = """u.id, u.username, u.display_name, u.role, u.firm_id, u.technician_id,
    u.user_unit_id, u.manufacturer_id, u.jurisdiction_id, u.active"""

# Compared against when the user does not exist, so a login takes as long either way.
_DUMMY_HASH = security.hash_password("not a password of anyone")


class UserError(ValueError):
    """A user could not be created: the message says why."""


def _principal(row: dict[str, Any], via: str) -> Principal:
    return Principal(
        user_id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        firm_id=row["firm_id"],
        technician_id=row["technician_id"],
        user_unit_id=row["user_unit_id"],
        manufacturer_id=row["manufacturer_id"],
        jurisdiction_id=row["jurisdiction_id"],
        via=via,  # type: ignore[arg-type]
        credential_id=row.get("credential_id"),
        expires_at=row.get("expires_at"),
        key_read_only=bool(row.get("key_read_only", False)),
    )


async def create_user(
    conn: psycopg.AsyncConnection,
    *,
    username: str,
    password: str,
    role: Role | str,
    display_name: str = "",
    firm_id: int | None = None,
    technician_id: int | None = None,
    user_unit_id: int | None = None,
    manufacturer_id: int | None = None,
    jurisdiction_id: int | None = None,
) -> UserOut:
    """Insert a user with a hashed password; the schema checks the scope matches the role."""
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"""INSERT INTO users AS u (username, display_name, password_hash, role, firm_id,
                        technician_id, user_unit_id, manufacturer_id, jurisdiction_id)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                    RETURNING {_USER_COLUMNS}""",
                (
                    username,
                    display_name,
                    security.hash_password(password),
                    str(Role(role)),
                    firm_id,
                    technician_id,
                    user_unit_id,
                    manufacturer_id,
                    jurisdiction_id,
                ),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise UserError(f"username {username!r} is taken") from None
    except psycopg.errors.CheckViolation:
        raise UserError(f"the scope fields do not match role {role!s} (rule A2)") from None
    except psycopg.errors.ForeignKeyViolation as exc:
        raise UserError(f"unknown scope reference: {exc.diag.message_detail}") from None
    assert row is not None
    return UserOut.model_validate(row)


async def list_users(conn: psycopg.AsyncConnection, *, limit: int, offset: int) -> list[UserOut]:
    """Users by id."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_USER_COLUMNS} FROM users u ORDER BY u.id LIMIT %s OFFSET %s",
            (limit, offset),
        )
        return [UserOut.model_validate(row) for row in await cur.fetchall()]


async def list_users_by_id(conn: psycopg.AsyncConnection, *, ids: list[int]) -> list[UserOut]:
    """The users with these ids."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_USER_COLUMNS} FROM users u WHERE u.id = ANY(%s) ORDER BY u.id", (ids,)
        )
        return [UserOut.model_validate(row) for row in await cur.fetchall()]


async def authenticate(
    conn: psycopg.AsyncConnection, *, username: str, password: str
) -> UserOut | None:
    """The active user with these credentials, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = %s",
            (username,),
        )
        row = await cur.fetchone()
    if row is None:
        security.verify_password(password, _DUMMY_HASH)
        return None
    if not security.verify_password(password, row.pop("password_hash")) or not row["active"]:
        return None
    return UserOut.model_validate(row)


async def create_session(
    conn: psycopg.AsyncConnection, *, user_id: int, now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    """A new session token for the user and when it expires."""
    token = security.new_session_token()
    expires_at = now + ttl
    await conn.execute(
        """INSERT INTO api_sessions (user_id, token_hash, created_at, expires_at)
           VALUES (%s, %s, %s, %s)""",
        (user_id, security.token_hash(token), now, expires_at),
    )
    return token, expires_at


async def revoke_session(conn: psycopg.AsyncConnection, *, token: str, now: datetime) -> bool:
    """Revoke a session; False when it was not live."""
    cur = await conn.execute(
        """UPDATE api_sessions SET revoked_at = greatest(%s, created_at)
           WHERE token_hash = %s AND revoked_at IS NULL""",
        (now, security.token_hash(token)),
    )
    return cur.rowcount == 1


async def principal_for_session(
    conn: psycopg.AsyncConnection, *, token: str, now: datetime
) -> Principal | None:
    """The principal of a live session token, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {_USER_COLUMNS}, s.id AS credential_id, s.expires_at
                FROM api_sessions s JOIN users u ON u.id = s.user_id
                WHERE s.token_hash = %s AND s.revoked_at IS NULL AND s.expires_at > %s
                  AND u.active""",
            (security.token_hash(token), now),
        )
        row = await cur.fetchone()
    return _principal(row, "session") if row else None


async def principal_for_api_key(
    conn: psycopg.AsyncConnection, *, key: str, now: datetime
) -> Principal | None:
    """The principal of a valid API key (looked up by prefix, secret checked by hash), or None."""
    parts = security.split_api_key(key)
    if parts is None:
        return None
    prefix, secret = parts
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {_USER_COLUMNS}, k.secret_hash, k.id AS credential_id, k.expires_at,
                       k.read_only AS key_read_only
                FROM api_keys k JOIN users u ON u.id = k.user_id
                WHERE k.prefix = %s AND k.revoked_at IS NULL
                  AND (k.expires_at IS NULL OR k.expires_at > %s) AND u.active""",
            (prefix, now),
        )
        row = await cur.fetchone()
    if row is None or not security.api_key_matches(secret, row.pop("secret_hash")):
        return None
    return _principal(row, "api_key")


async def create_api_key(
    conn: psycopg.AsyncConnection,
    *,
    user_id: int,
    name: str,
    now: datetime,
    expires_at: datetime | None,
    read_only: bool = False,
) -> ApiKeyCreated:
    """A new API key for the user; the full key is returned once and only its hash is kept. A
    regulator's key is read-only whatever was asked: a key never carries more than its role."""
    fresh = security.new_api_key()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """INSERT INTO api_keys (user_id, name, prefix, secret_hash, created_at, expires_at,
                                     read_only)
               SELECT u.id, %s, %s, %s, %s, %s, %s OR u.role = 'regulator'
               FROM users u WHERE u.id = %s
               RETURNING id, name, prefix, created_at, expires_at, revoked_at, read_only""",
            (name, fresh.prefix, fresh.secret_hash, now, expires_at, read_only, user_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return ApiKeyCreated(**row, key=fresh.key)


async def list_api_keys(conn: psycopg.AsyncConnection, *, user_id: int) -> list[ApiKeyOut]:
    """The user's API keys (public parts)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, name, prefix, created_at, expires_at, revoked_at, read_only
               FROM api_keys
               WHERE user_id = %s ORDER BY id""",
            (user_id,),
        )
        return [ApiKeyOut.model_validate(row) for row in await cur.fetchall()]


async def revoke_api_key(
    conn: psycopg.AsyncConnection, *, user_id: int, key_id: int, now: datetime
) -> bool:
    """Revoke one of the user's keys; False when the user has no such live key."""
    cur = await conn.execute(
        """UPDATE api_keys SET revoked_at = greatest(%s, created_at)
           WHERE id = %s AND user_id = %s AND revoked_at IS NULL""",
        (now, key_id, user_id),
    )
    return cur.rowcount == 1


async def locked_until(
    conn: psycopg.AsyncConnection, *, keys: list[str], now: datetime
) -> datetime | None:
    """The latest lock still in force on any of these throttle keys, or None."""
    cur = await conn.execute(
        "SELECT max(locked_until) FROM login_throttle WHERE key = ANY(%s) AND locked_until > %s",
        (keys, now),
    )
    row = await cur.fetchone()
    return first_value(row)


async def count_failure(
    conn: psycopg.AsyncConnection, *, key: str, now: datetime, forget_before: datetime
) -> int:
    """Count a failed login on a throttle key; the failures in a row it now has."""
    cur = await conn.execute(
        """INSERT INTO login_throttle AS t (key, failures, last_failure_at) VALUES (%s, 1, %s)
           ON CONFLICT (key) DO UPDATE SET
               failures = CASE WHEN t.last_failure_at < %s THEN 1 ELSE t.failures + 1 END,
               last_failure_at = excluded.last_failure_at
           RETURNING failures""",
        (key, now, forget_before),
    )
    return int(first_value(await cur.fetchone()))


async def lock(conn: psycopg.AsyncConnection, *, key: str, until: datetime) -> None:
    """Lock a throttle key until a time."""
    await conn.execute("UPDATE login_throttle SET locked_until = %s WHERE key = %s", (until, key))


async def clear_failures(conn: psycopg.AsyncConnection, *, key: str) -> None:
    """A successful login: the account's failures are forgotten."""
    await conn.execute("DELETE FROM login_throttle WHERE key = %s", (key,))
