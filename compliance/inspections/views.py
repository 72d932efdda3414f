"""Inspection rounds of street lighting (rule L4): record a round, list rounds, findings and
what falls due, scoped by rule A2."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from api.auth.models import Principal, Role
from api.deps import Conn, Context, CurrentPrincipal, not_found, require_roles, run_sync, send
from api.scope import acting_technician, device_scope_args, device_visible
from compliance.inspections import flows, service
from compliance.inspections.models import (
    LIGHTING_KINDS,
    DueRound,
    MissedRound,
    Round,
    RoundCreate,
    RoundError,
    RoundKind,
)

router = APIRouter(prefix="/inspections", tags=["inspections"])

# the firm's people record rounds (a dispatcher the control room's remote reviews)
Recorder = Annotated[
    Principal, require_roles(Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER, Role.TECHNICIAN)
]
DeviceQuery = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
SiteQuery = Annotated[int | None, Query(ge=1, le=2**62)]
NOT_FOUND = {404: {"description": "no such pole, mast or section in the caller's scope"}}
REFUSED = {400: {"description": "the round is refused: the message says why"}}


@router.post(
    "/rounds",
    response_model=Round,
    status_code=status.HTTP_201_CREATED,
    summary="Record an inspection round (rule L4)",
    responses={**NOT_FOUND, **REFUSED},
)
async def create_round(body: RoundCreate, principal: Recorder, ctx: Context, conn: Conn) -> Round:
    """A patrol or remote review of a section (``site_id``), or a pole-head box check,
    cleaning, grounding or insulation measurement or calibration of a pole or mast
    (``device_id``). Grounding and insulation are judged by the platform from the measured
    value against the policy in force; a failed round opens corrective work, and a round done
    late makes good the finding it answers."""
    if body.device_id is not None:
        if not await device_visible(conn, principal=principal, device_id=body.device_id):
            raise not_found("pole or mast")
    elif body.site_id is not None and not await service.section_visible(
        conn, **device_scope_args(principal), site_id=body.site_id
    ):
        raise not_found("section")
    technician_id = await acting_technician(conn, principal, body.technician_id, required=False)
    now = ctx.clock.now()
    try:
        return await run_sync(
            ctx,
            flows.record_round,
            kind=body.kind,
            site_id=body.site_id,
            device_id=body.device_id,
            performed_at=body.performed_at or now,
            technician_id=technician_id,
            measured=body.measured,
            test_voltage_v=body.test_voltage_v,
            passed=body.passed,
            note=body.note,
            recorded_by=principal.username,
            now=now,
        )
    except RoundError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None


@router.get("/rounds", response_model=list[Round], summary="Inspection rounds, newest first")
async def list_rounds(
    principal: CurrentPrincipal,
    conn: Conn,
    device_id: DeviceQuery = None,
    site_id: SiteQuery = None,
    kind: RoundKind | None = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> Response:
    """Rounds of the poles, masts and sections in the caller's scope, with their measured
    values, limits and verdicts."""
    rounds = await service.list_rounds(
        conn,
        **device_scope_args(principal),
        device_id=device_id,
        site_id=site_id,
        kind=kind,
        limit=limit,
    )
    return send(list[Round], rounds)


@router.get(
    "/findings", response_model=list[MissedRound], summary="Rounds not done in time (rule L4)"
)
async def list_findings(
    principal: CurrentPrincipal,
    conn: Conn,
    unresolved: Annotated[
        bool | None,
        Query(description="only those not yet made good (true) or only those made good (false)"),
    ] = None,
    site_id: SiteQuery = None,
    kind: RoundKind | None = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> Response:
    """Each week short of patrols, day without a review, and device round past its interval,
    with the policy it was judged by."""
    found = await service.list_findings(
        conn,
        **device_scope_args(principal),
        unresolved=unresolved,
        site_id=site_id,
        kind=kind,
        limit=limit,
    )
    return send(list[MissedRound], found)


@router.get("/due", response_model=list[DueRound], summary="Device rounds falling due")
async def list_due(
    principal: CurrentPrincipal,
    ctx: Context,
    conn: Conn,
    device_id: DeviceQuery = None,
    overdue: Annotated[bool | None, Query(description="only overdue (true) or not (false)")] = None,
) -> Response:
    """The next pole-head box check, cleaning, measurement and calibration of each pole and
    mast in the caller's scope, soonest first."""
    devices = await service.visible_devices(
        conn, **device_scope_args(principal), kinds=list(LIGHTING_KINDS), device_id=device_id
    )
    due = await run_sync(ctx, flows.due_rounds, now=ctx.clock.now(), devices=devices)
    chosen = [d for d in due if overdue is None or d.overdue == overdue]
    return send(list[DueRound], sorted(chosen, key=lambda d: (d.due_by, d.device_id)))
