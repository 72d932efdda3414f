"""Login, logout, the caller, users and API keys."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status

from api.auth import flows, service
from api.auth.models import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    LoginRequest,
    Principal,
    Role,
    SessionOut,
    UserCreate,
    UserOut,
)
from api.deps import Conn, Context, CurrentPrincipal, not_found, require_roles

router = APIRouter(tags=["auth"])

Admin = Annotated[Principal, require_roles(Role.ADMIN)]
log = logging.getLogger(__name__)


def _too_many(locked_until: datetime, *, now: datetime) -> HTTPException:
    wait = flows.retry_after(locked_until, now=now)
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"too many failed logins: try again in {wait} s",
        headers={"Retry-After": str(wait)},
    )


@router.post(
    "/auth/login",
    response_model=SessionOut,
    summary="Log in with a username and password",
    responses={
        401: {"description": "wrong credentials"},
        429: {"description": "too many failed logins: try again after ``Retry-After`` seconds"},
    },
)
async def login(body: LoginRequest, request: Request, ctx: Context, conn: Conn) -> SessionOut:
    """Returns a session token to send as ``Authorization: Bearer <token>``. After 5 failed
    logins on an account (20 from one address) each further failure locks it for a growing
    delay, 15 s doubling up to 15 min; while locked even the right password gets 429."""
    now = ctx.clock.now()
    address = request.client.host if request.client else "unknown"
    keys = {
        flows.account_key(body.username): flows.ACCOUNT,
        flows.address_key(address): flows.ADDRESS,
    }
    locked = await service.locked_until(conn, keys=list(keys), now=now)
    if locked is not None:
        raise _too_many(locked, now=now)
    user = await service.authenticate(conn, username=body.username, password=body.password)
    if user is None:
        for key, throttle in keys.items():
            failures = await service.count_failure(
                conn, key=key, now=now, forget_before=now - throttle.forget
            )
            if (lock_for := throttle.lock_for(failures)) is not None:
                await service.lock(conn, key=key, until=now + lock_for)
                log.warning(
                    "login lockout: %s locked for %d s after %d failed logins in a row",
                    key,
                    lock_for.total_seconds(),
                    failures,
                )
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="wrong username or password")
    await service.clear_failures(conn, key=flows.account_key(body.username))
    token, expires_at = await service.create_session(
        conn, user_id=user.id, now=ctx.clock.now(), ttl=ctx.session_ttl
    )
    return SessionOut(token=token, expires_at=expires_at, user=user)


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the current session token",
)
async def logout(request: Request, principal: CurrentPrincipal, ctx: Context, conn: Conn) -> None:
    """Revokes the bearer token the request was made with, on every worker at once."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if principal.via != "session" or scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="log out with a session token")
    await service.revoke_session(conn, token=token.strip(), now=ctx.clock.now())


@router.get("/me", response_model=UserOut, summary="The calling user and its scope")
async def me(principal: CurrentPrincipal, conn: Conn) -> UserOut:
    """Who the credentials belong to."""
    users = await service.list_users_by_id(conn, ids=[principal.user_id])
    return users[0]


@router.get("/users", response_model=list[UserOut], summary="List users (admin)")
async def list_users(
    _: Admin,
    conn: Conn,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[UserOut]:
    """All users, by id."""
    return await service.list_users(conn, limit=limit, offset=offset)


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a user (admin)",
    responses={409: {"description": "username taken"}, 400: {"description": "bad scope"}},
)
async def create_user(body: UserCreate, _: Admin, conn: Conn) -> UserOut:
    """Creates a user; the scope fields must be exactly those its role carries (rule A2)."""
    try:
        user = await service.create_user(conn, **body.model_dump())
    except service.UserError as exc:
        code = status.HTTP_409_CONFLICT if "taken" in str(exc) else status.HTTP_400_BAD_REQUEST
        raise HTTPException(code, detail=str(exc)) from None
    return user


@router.get("/api-keys", response_model=list[ApiKeyOut], summary="The caller's API keys")
async def list_api_keys(principal: CurrentPrincipal, conn: Conn) -> list[ApiKeyOut]:
    """Public parts only: secrets are never shown again."""
    return await service.list_api_keys(conn, user_id=principal.user_id)


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key for the caller",
)
async def create_api_key(
    body: ApiKeyCreate, principal: CurrentPrincipal, ctx: Context, conn: Conn
) -> ApiKeyCreated:
    """The key acts with the caller's role and scope, never more: a regulator's keys (and any
    asked for ``read_only``, or made with a read-only key) may only read. Send it as
    ``X-API-Key``."""
    now = ctx.clock.now()
    if body.expires_at is not None and (body.expires_at.tzinfo is None or body.expires_at <= now):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="expires_at must be a future time with a timezone",
        )
    created = await service.create_api_key(
        conn,
        user_id=principal.user_id,
        name=body.name,
        now=now,
        expires_at=body.expires_at,
        read_only=body.read_only or principal.read_only or principal.key_read_only,
    )
    return created


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke one of the caller's API keys",
    responses={404: {"description": "no such live key of the caller"}},
)
async def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=2**62)],
    principal: CurrentPrincipal,
    ctx: Context,
    conn: Conn,
) -> None:
    """Revokes a key at once on every worker."""
    if not await service.revoke_api_key(
        conn, user_id=principal.user_id, key_id=key_id, now=ctx.clock.now()
    ):
        raise not_found("API key")
