"""``GET /stream``: server-sent events, scoped to the caller (rule A2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from api.deps import Context, Credentials, CurrentPrincipal, credentials, principal_of
from api.live.service import Broadcaster, Subscription

router = APIRouter(tags=["live"])


def sse(event: str, data: object) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(
    broadcaster: Broadcaster,
    sub: Subscription,
    still_valid: Callable[[], Awaitable[bool]],
    heartbeat_s: float,
) -> AsyncIterator[str]:
    try:
        yield sse("hello", {"user": sub.principal.username, "role": sub.principal.role.value})
        while True:
            try:
                message = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
            except TimeoutError:
                # a stream outlives no logout, revoked key or expiry: checked at each heartbeat
                if not await still_valid():
                    yield sse("logout", {"reason": "credentials revoked or expired"})
                    return
                yield ": ping\n\n"
                continue
            if message is None:  # the worker is shutting down
                return
            yield sse(message["type"], message)
    finally:
        broadcaster.unsubscribe(sub)


@router.get(
    "/stream",
    summary="Live updates (server-sent events) for the caller's scope",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "events: hello, state, event, command, alert, maintenance, "
            "resync, logout",
        }
    },
)
async def stream(
    principal: CurrentPrincipal,
    ctx: Context,
    creds: Annotated[Credentials, Depends(credentials)],
) -> StreamingResponse:
    """Events ``hello`` (subscribed), ``state`` (an asset changed), ``event``, ``command``,
    ``maintenance`` (a record or escalation changed),
    ``alert`` (alarm or incident changed) and ``resync`` (reload: something may have been
    missed). Only assets in the caller's scope appear. Read it with ``fetch`` and a bearer
    token, or with ``X-API-Key``."""
    sub = ctx.broadcaster.subscribe(principal)

    async def still_valid() -> bool:
        return await principal_of(ctx, creds) is not None

    return StreamingResponse(
        _stream(ctx.broadcaster, sub, still_valid, ctx.heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
