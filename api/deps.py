"""FastAPI dependencies: the app context, database connections and the calling principal."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pydantic import TypeAdapter

from api.auth import service as auth_service
from api.auth.models import Principal, Role
from vigil.clock import Clock
from vigil.db.pool import run_in_thread

T = TypeVar("T")


@dataclass
class ApiContext:
    """What every request handler may reach: the pool, the clock and the live broadcaster."""

    database_url: str
    clock: Clock
    session_ttl: timedelta
    heartbeat_s: float = 15.0  # real seconds between keep-alive lines of an idle live stream
    pool: AsyncConnectionPool | None = None
    # the other domains' service functions are synchronous: their endpoints run in a thread
    sync_pool: ConnectionPool | None = None
    broadcaster: Any = None  # api.live.service.Broadcaster, set at startup


async def context(request: Request) -> ApiContext:
    """The app's context."""
    return request.app.state.ctx


Context = Annotated[ApiContext, Depends(context)]


async def connection(ctx: Context) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled autocommit connection for one request (each statement commits by itself)."""
    assert ctx.pool is not None
    async with ctx.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.AsyncConnection, Depends(connection)]


def sync_connection(ctx: Context) -> Iterator[psycopg.Connection]:
    """A pooled synchronous connection for endpoints that call other domains' services."""
    assert ctx.sync_pool is not None
    with ctx.sync_pool.connection() as conn:
        yield conn


SyncConn = Annotated[psycopg.Connection, Depends(sync_connection)]


async def run_sync(ctx: ApiContext, fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run another domain's synchronous service function in a thread, on a pooled connection.

    The connection's transaction commits when ``fn`` returns and rolls back when it raises.
    """
    assert ctx.sync_pool is not None
    return await run_in_thread(ctx.sync_pool, fn, **kwargs)


_bearer = HTTPBearer(auto_error=False, description="session token from POST /api/v1/auth/login")
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key for integrations (vk_...)"
)


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the caller sent: a session token or an API key."""

    token: str | None
    api_key: str | None


async def credentials(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Credentials:
    """The credentials of the request; 401 when there are none."""
    if bearer is None and not api_key:
        raise _unauthorised("not authenticated: send a bearer token or an X-API-Key header")
    return Credentials(bearer.credentials if bearer else None, api_key or None)


async def principal_of(ctx: ApiContext, creds: Credentials) -> Principal | None:
    """The principal the credentials belong to now, or None (revoked, expired, unknown).

    Uses a connection of its own, released at once, so that a long live stream holds none.
    """
    assert ctx.pool is not None
    now = ctx.clock.now()
    async with ctx.pool.connection() as conn:
        if creds.token is not None:
            return await auth_service.principal_for_session(conn, token=creds.token, now=now)
        return await auth_service.principal_for_api_key(conn, key=creds.api_key or "", now=now)


# what a read-only API key may do
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def current_principal(
    request: Request, ctx: Context, creds: Annotated[Credentials, Depends(credentials)]
) -> Principal:
    """The caller, from a session token or an API key; 401 otherwise, 403 for a read-only key
    asked to write."""
    principal = await principal_of(ctx, creds)
    if principal is None:
        raise _unauthorised("invalid or expired credentials")
    if principal.key_read_only and request.method not in READ_METHODS:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this API key is read-only")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def writer(principal: CurrentPrincipal) -> Principal:
    """The caller, when it may write; regulators are read-only (rule A2)."""
    if principal.read_only:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="regulators have read-only access")
    return principal


Writer = Annotated[Principal, Depends(writer)]


def require_roles(*roles: Role) -> Any:
    """A dependency that lets only ``roles`` through (403 otherwise: a role check, not a lookup)."""
    allowed = frozenset(roles)

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"needs role: {names}")
        return principal

    check.roles = allowed  # type: ignore[attr-defined]  # read by api.http.document_errors
    return Depends(check)


@functools.cache
def _adapter(shape: Any) -> TypeAdapter[Any]:
    return TypeAdapter(shape)


def send(shape: Any, value: Any) -> Response:
    """``value`` as JSON of its ``shape`` (e.g. ``list[AlarmOut]``), serialised by pydantic-core
    in one pass: lists the console polls are sent without FastAPI validating them again."""
    return Response(_adapter(shape).dump_json(value), media_type="application/json")


def invalid(*loc: str | int, msg: str) -> HTTPException:
    """422 shaped like FastAPI's own validation errors, for a value only the domain can judge."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        detail=[{"loc": list(loc), "msg": msg, "type": "value_error"}],
    )


def not_found(what: str) -> HTTPException:
    """404 for anything missing or outside the caller's scope (never 403, rule A2)."""
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{what} not found")
