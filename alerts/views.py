"""Alarms: list, acknowledge, clear (scoped by rule A2)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from alerts import service
from alerts.models import (
    CLEARED_BY_SOURCE,
    AlarmDetail,
    AlarmError,
    AlarmOut,
    AlarmStateError,
    ClearRequest,
)
from api.auth.models import Principal, Role
from api.deps import Conn, Context, CurrentPrincipal, not_found, require_roles, send
from api.scope import alarm_scope_args

router = APIRouter(prefix="/alarms", tags=["alarms"])

AlarmId = Annotated[int, Path(ge=1, le=2**62)]


# who may act on an alarm: the firm's people and the platform; regulators never write
Responder = Annotated[
    Principal,
    require_roles(Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER, Role.TECHNICIAN),
]
NOT_FOUND = {404: {"description": "no such alarm in the caller's scope"}}
STATES = ("active", "acknowledged", "cleared")


@router.get("", response_model=list[AlarmOut], summary="Alarms in the caller's scope")
async def list_alarms(
    principal: CurrentPrincipal,
    conn: Conn,
    state: Annotated[
        list[str] | None,
        Query(description="active, acknowledged, cleared; default: open ones"),
    ] = None,
    device_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = None,
    type: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.]{0,63}$")] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> Response:
    """Newest first; by default the open (active and acknowledged) ones."""
    states = state or ["active", "acknowledged"]
    unknown = sorted(set(states) - set(STATES))
    if unknown:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"unknown state {unknown[0]!r}; one of {', '.join(STATES)}",
        )
    alarms = await service.list_scoped_alarms(
        conn,
        **alarm_scope_args(principal),
        states=states,
        device_id=device_id,
        type=type,
        limit=limit,
    )
    return send(list[AlarmOut], alarms)


@router.get(
    "/{alarm_id}",
    response_model=AlarmDetail,
    summary="One alarm and its history",
    responses=NOT_FOUND,
)
async def get_alarm(alarm_id: AlarmId, principal: CurrentPrincipal, conn: Conn) -> AlarmDetail:
    """404 when missing or outside the caller's scope (rule A2)."""
    alarm = await service.get_scoped_alarm(conn, **alarm_scope_args(principal), alarm_id=alarm_id)
    if alarm is None:
        raise not_found("alarm")
    history = await service.alarm_history(conn, alarm_id=alarm_id)
    return AlarmDetail(**alarm.model_dump(), history=history)


async def _in_scope(conn: Conn, principal: Principal, alarm_id: int) -> None:
    if (
        await service.get_scoped_alarm(conn, **alarm_scope_args(principal), alarm_id=alarm_id)
        is None
    ):
        raise not_found("alarm")


@router.post(
    "/{alarm_id}/acknowledge",
    response_model=AlarmOut,
    summary="Acknowledge an alarm (stops its escalation)",
    responses={**NOT_FOUND, 409: {"description": "the alarm is cleared"}},
)
async def acknowledge(
    alarm_id: AlarmId, principal: Responder, ctx: Context, conn: Conn
) -> AlarmOut:
    """Idempotent while acknowledged; a cleared alarm cannot be acknowledged (409)."""
    await _in_scope(conn, principal, alarm_id)
    try:
        await service.aacknowledge_alarm(
            conn, alarm_id=alarm_id, by=principal.username, at=ctx.clock.now()
        )
    except AlarmStateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    except AlarmError:
        raise not_found("alarm") from None
    found = await service.get_scoped_alarm(conn, **alarm_scope_args(principal), alarm_id=alarm_id)
    assert found is not None
    return found


@router.post(
    "/{alarm_id}/clear",
    response_model=AlarmOut,
    summary="Clear an alarm",
    responses={**NOT_FOUND, 409: {"description": "an entrapment alarm of an open incident"}},
)
async def clear(
    alarm_id: AlarmId,
    principal: Responder,
    ctx: Context,
    conn: Conn,
    body: ClearRequest | None = None,
) -> AlarmOut:
    """Idempotent once cleared; the reason is kept in the alarm's history. An entrapment alarm
    clears only when its incident closes (rule R6): 409 before that."""
    found = await service.get_scoped_alarm(conn, **alarm_scope_args(principal), alarm_id=alarm_id)
    if found is None:
        raise not_found("alarm")
    if found.type in CLEARED_BY_SOURCE and found.state != "cleared":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="an entrapment alarm clears when its incident is closed, not by hand",
        )
    try:
        await service.aclear_alarm(
            conn,
            alarm_id=alarm_id,
            by=principal.username,
            at=ctx.clock.now(),
            reason=body.reason if body else "",
        )
    except AlarmError:
        raise not_found("alarm") from None
    found = await service.get_scoped_alarm(conn, **alarm_scope_args(principal), alarm_id=alarm_id)
    assert found is not None
    return found
