"""Rescue incidents: report, dispatch, accept, check in, release, close (rules R1-R6)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from api.auth.models import Principal, Role
from api.deps import (
    ApiContext,
    Conn,
    Context,
    CurrentPrincipal,
    invalid,
    not_found,
    require_roles,
    run_sync,
    send,
)
from api.scope import device_scope_args, device_visible
from compliance.rescue import flows as rescue_flows
from compliance.rescue import service
from compliance.rescue.models import (
    AcceptRequest,
    CheckInRequest,
    FalseAlarmRequest,
    IncidentDetail,
    IncidentNotFound,
    IncidentOut,
    ReportOut,
    ReportRequest,
    RescueError,
    TechnicianPosition,
    Trigger,
    UnknownTechnician,
)

router = APIRouter(prefix="/incidents", tags=["incidents"])

IncidentId = Annotated[int, Path(ge=1, le=2**62)]
# rule R1: a report by phone or API; the building's safety manager may call one in too
Reporter = Annotated[
    Principal,
    require_roles(
        Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER, Role.TECHNICIAN, Role.SAFETY_MANAGER
    ),
]
Responder = Annotated[
    Principal, require_roles(Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER, Role.TECHNICIAN)
]
NOT_FOUND = {404: {"description": "no such incident in the caller's scope"}}
UNKNOWN_TECHNICIAN = {422: {"description": "the technician id names nobody, or bad input"}}
CONFLICT = {409: {"description": "the incident cannot take this step now; the message says why"}}

ESTIMATOR = rescue_flows.StraightLineEstimator()


def conflict(exc: RescueError) -> HTTPException:
    """409 with the rescue domain's reason; 404 for an incident that does not exist, 422 for a
    technician id that names nobody."""
    if isinstance(exc, IncidentNotFound):
        return not_found("incident")
    if isinstance(exc, UnknownTechnician):
        return invalid("body", "technician_id", msg=str(exc))
    return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))


def _recorded_by(principal: Principal) -> str | None:
    """Rule A1: who recorded a technician's step, when it is not the technician (the duty line
    on the phone): logged as "<user> on behalf of technician:<id>"."""
    return None if principal.role is Role.TECHNICIAN else principal.username


async def _scoped(conn: Conn, principal: Principal, incident_id: int) -> IncidentOut:
    found = await service.get_scoped_incident(
        conn, **device_scope_args(principal), incident_id=incident_id
    )
    if found is None:
        raise not_found("incident")
    return found


async def _fresh(conn: Conn, principal: Principal, incident_id: int) -> IncidentOut:
    found = await service.get_scoped_incident(
        conn, **device_scope_args(principal), incident_id=incident_id
    )
    assert found is not None
    return found


def _technician(principal: Principal, incident: IncidentOut, given: int | None) -> int:
    """Who takes the step: the calling technician, or (for the duty line) the one dispatched."""
    if principal.role is Role.TECHNICIAN:
        if given not in (None, principal.technician_id):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, detail="a technician answers for itself only"
            )
        assert principal.technician_id is not None
        return principal.technician_id
    chosen = given or incident.technician_id
    if chosen is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"incident {incident.id} has no technician dispatched"
        )
    return chosen


@router.get("", response_model=list[IncidentOut], summary="Incidents in the caller's scope")
async def list_incidents(
    principal: CurrentPrincipal,
    conn: Conn,
    which: Annotated[Literal["open", "all"], Query(description="open ones, or all")] = "open",
    device_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> Response:
    """Open incidents by arrival deadline (rule R2), or all of them newest first."""
    incidents = await service.list_scoped_incidents(
        conn,
        **device_scope_args(principal),
        open_only=which == "open",
        device_id=device_id,
        limit=limit,
    )
    return send(list[IncidentOut], incidents)


@router.get(
    "/technicians",
    response_model=list[TechnicianPosition],
    summary="On-call technicians with their last known positions (dispatch map)",
)
async def on_call_technicians(
    principal: CurrentPrincipal, ctx: Context, conn: Conn
) -> list[TechnicianPosition]:
    """Technicians on call now (rule R3) of the firms maintaining the caller's assets."""
    return await service.on_call_positions(conn, **device_scope_args(principal), at=ctx.clock.now())


@router.get(
    "/{incident_id}",
    response_model=IncidentDetail,
    summary="One incident with its steps and dispatches",
    responses=NOT_FOUND,
)
async def get_incident(
    incident_id: IncidentId, principal: CurrentPrincipal, conn: Conn
) -> IncidentDetail:
    """404 when missing or outside the caller's scope (rule A2)."""
    found = await service.get_scoped_incident(
        conn, **device_scope_args(principal), incident_id=incident_id
    )
    if found is None:
        raise not_found("incident")
    return IncidentDetail(
        **found.model_dump(),
        steps=await service.incident_steps(conn, incident_id=incident_id),
        dispatches=await service.incident_dispatches(conn, incident_id=incident_id),
    )


@router.post(
    "",
    response_model=ReportOut,
    status_code=status.HTTP_201_CREATED,
    summary="Report an entrapment (phone call or integration)",
    responses={404: {"description": "no such asset in scope"}, **CONFLICT},
)
async def report(body: ReportRequest, principal: Reporter, ctx: Context, conn: Conn) -> ReportOut:
    """Rule R1: opens an incident, or attaches the report to the lift's open one
    (``created`` false). The deadline counts from the report (rule R2)."""
    if not await device_visible(conn, principal=principal, device_id=body.device_id):
        raise not_found("asset")
    try:
        opened = await run_sync(
            ctx,
            rescue_flows.report,
            device_id=body.device_id,
            trigger=Trigger.MANUAL,
            at=ctx.clock.now(),
            actor=principal.username,
            detail={"note": body.note, "via": principal.via},
        )
    except RescueError as exc:
        raise conflict(exc) from None
    incident = await _fresh(conn, principal, opened.incident.id)
    return ReportOut(created=opened.created, incident=incident)


async def _step(ctx: ApiContext, action: object, **kwargs: object) -> None:
    try:
        await run_sync(ctx, action, **kwargs)  # type: ignore[arg-type]
    except RescueError as exc:
        raise conflict(exc) from None


@router.post(
    "/{incident_id}/dispatch",
    response_model=IncidentOut,
    summary="Dispatch the best on-call technician now",
    responses={**NOT_FOUND, **CONFLICT},
)
async def dispatch(
    incident_id: IncidentId,
    principal: Annotated[Principal, require_roles(Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER)],
    ctx: Context,
    conn: Conn,
) -> IncidentOut:
    """Rules R4, R5: the qualified on-call technician with the shortest estimated travel; when
    nobody can make the deadline, escalation. The rescue engine does this by itself; this is
    the duty line's button for when it has not (or to dispatch the next one)."""
    await _scoped(conn, principal, incident_id)
    outcome = await run_sync(
        ctx,
        rescue_flows.dispatch_next,
        incident_id=incident_id,
        now=ctx.clock.now(),
        estimator=ESTIMATOR,
    )
    if outcome.dispatch is None and not outcome.escalated:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"not dispatched: {outcome.reason}")
    return await _fresh(conn, principal, incident_id)


@router.post(
    "/{incident_id}/accept",
    response_model=IncidentOut,
    summary="Accept the dispatch",
    responses={**NOT_FOUND, **CONFLICT},
)
async def accept(
    incident_id: IncidentId,
    principal: Responder,
    ctx: Context,
    conn: Conn,
    body: AcceptRequest | None = None,
) -> IncidentOut:
    """Rule R4: the dispatched technician accepts in time (the duty line may record it)."""
    incident = await _scoped(conn, principal, incident_id)
    technician_id = _technician(principal, incident, body.technician_id if body else None)
    await _step(
        ctx,
        rescue_flows.accept,
        incident_id=incident_id,
        technician_id=technician_id,
        at=ctx.clock.now(),
        actor=_recorded_by(principal),
    )
    return await _fresh(conn, principal, incident_id)


@router.post(
    "/{incident_id}/check-in",
    response_model=IncidentOut,
    summary="Technician check-in: arrival at the site",
    responses={**NOT_FOUND, **CONFLICT, **UNKNOWN_TECHNICIAN},
)
async def check_in(
    incident_id: IncidentId,
    body: CheckInRequest,
    principal: Responder,
    ctx: Context,
    conn: Conn,
) -> IncidentOut:
    """Rule R6: the technician's own measured position near the site proves arrival. Without a
    position, or entered by the duty line on the technician's behalf, the arrival is recorded
    as unproven. A late arrival is a breach."""
    incident = await _scoped(conn, principal, incident_id)
    technician_id = _technician(principal, incident, body.technician_id)
    try:
        outcome = await run_sync(
            ctx,
            rescue_flows.check_in,
            technician_id=technician_id,
            device_id=incident.device_id,
            at=ctx.clock.now(),
            latitude=body.latitude,
            longitude=body.longitude,
            actor=_recorded_by(principal),
        )
    except RescueError as exc:
        raise conflict(exc) from None
    if not outcome.arrived:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"not arrived: {outcome.reason}")
    return await _fresh(conn, principal, incident_id)


@router.post(
    "/{incident_id}/release",
    response_model=IncidentOut,
    summary="The passengers are out",
    responses={**NOT_FOUND, **CONFLICT},
)
async def release(
    incident_id: IncidentId, principal: Responder, ctx: Context, conn: Conn
) -> IncidentOut:
    """Rule R6: released, with its own time and actor."""
    await _scoped(conn, principal, incident_id)
    await _step(
        ctx,
        rescue_flows.release,
        incident_id=incident_id,
        at=ctx.clock.now(),
        actor=principal.username,
    )
    return await _fresh(conn, principal, incident_id)


@router.post(
    "/{incident_id}/close",
    response_model=IncidentOut,
    summary="Close the incident",
    responses={**NOT_FOUND, **CONFLICT},
)
async def close(
    incident_id: IncidentId, principal: Responder, ctx: Context, conn: Conn
) -> IncidentOut:
    """Rule R6: closed after release; the entrapment alarm clears."""
    await _scoped(conn, principal, incident_id)
    await _step(
        ctx,
        rescue_flows.close,
        incident_id=incident_id,
        at=ctx.clock.now(),
        actor=principal.username,
    )
    return await _fresh(conn, principal, incident_id)


@router.post(
    "/{incident_id}/false-alarm",
    response_model=IncidentOut,
    summary="Close as a false alarm",
    responses={**NOT_FOUND, **CONFLICT},
)
async def false_alarm(
    incident_id: IncidentId,
    body: FalseAlarmRequest,
    principal: Responder,
    ctx: Context,
    conn: Conn,
) -> IncidentOut:
    """Rule R1: nobody was trapped; logged with the reason."""
    await _scoped(conn, principal, incident_id)
    await _step(
        ctx,
        rescue_flows.close_false_alarm,
        incident_id=incident_id,
        at=ctx.clock.now(),
        actor=principal.username,
        reason=body.reason,
    )
    return await _fresh(conn, principal, incident_id)
