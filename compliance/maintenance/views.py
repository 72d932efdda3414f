"""Maintenance: due and overdue lists, records (create, correct, sign off), verdicts, overrides."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from api.auth.models import Principal, Role
from api.deps import Conn, Context, CurrentPrincipal, not_found, require_roles, run_sync, send
from api.scope import acting_technician, device_scope_args, device_visible
from compliance.maintenance import flows as maintenance_flows
from compliance.maintenance import service
from compliance.maintenance.models import (
    DueItem,
    OverrideOut,
    OverrideRequest,
    Part,
    PartChange,
    RecordCorrection,
    RecordCreate,
    RecordDetail,
    RecordError,
    RecordOut,
)

router = APIRouter(prefix="/maintenance", tags=["maintenance"])

RecordId = Annotated[int, Path(ge=1, le=2**62)]
DeviceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Recorder = Annotated[
    Principal, require_roles(Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER, Role.TECHNICIAN)
]
SafetyManager = Annotated[Principal, require_roles(Role.SAFETY_MANAGER)]
# rule M6: an authorised, logged override; the compliance domain authorises admins and the
# regulator of the elevator's jurisdiction, the one write a regulator makes
Overrider = Annotated[Principal, require_roles(Role.ADMIN, Role.REGULATOR)]
NOT_FOUND = {404: {"description": "not found in the caller's scope"}}
REFUSED = {400: {"description": "the record is refused: the message says why"}}
VERDICTS = (
    "verified",
    "no_evidence",
    "too_short",
    "no_car_top_or_pit",
    "duplicate_visit",
    "outside_window",
)


def refused(exc: RecordError) -> HTTPException:
    """400 for a record the rules refuse; 409 when it clashes with what is already saved."""
    text = str(exc)
    code = status.HTTP_409_CONFLICT if "already" in text else status.HTTP_400_BAD_REQUEST
    return HTTPException(code, detail=text)


@router.get("/due", response_model=list[DueItem], summary="Due soon, overdue and locked-out lifts")
async def list_due(
    principal: CurrentPrincipal,
    conn: Conn,
    state: Annotated[list[str] | None, Query(description="escalation states")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> Response:
    """Elevators in scope by escalation state (rules M1, M5, M6), most overdue first."""
    states = state or list(service.DUE_STATES)
    unknown = sorted(set(states) - {*service.DUE_STATES, "ok"})
    if unknown:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"unknown state {unknown[0]!r}; one of ok, {', '.join(service.DUE_STATES)}",
        )
    due = await service.list_due(conn, **device_scope_args(principal), states=states, limit=limit)
    return send(list[DueItem], due)


@router.get("/records", response_model=list[RecordOut], summary="Maintenance records")
async def list_records(
    principal: CurrentPrincipal,
    conn: Conn,
    device_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = None,
    verdict: Annotated[str | None, Query(description=", ".join(VERDICTS))] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> Response:
    """Records of elevators in scope with their verdict in force (M3) and sign-off (M4)."""
    if verdict is not None and verdict not in VERDICTS:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}",
        )
    records = await service.list_scoped_records(
        conn,
        **device_scope_args(principal),
        device_id=device_id,
        verdict=verdict,
        limit=limit,
    )
    return send(list[RecordOut], records)


@router.get(
    "/records/{record_id}",
    response_model=RecordDetail,
    summary="One record with every verdict",
    responses=NOT_FOUND,
)
async def get_record(record_id: RecordId, principal: CurrentPrincipal, conn: Conn) -> RecordDetail:
    """404 when missing or outside the caller's scope (rule A2)."""
    found = await service.get_scoped_record(
        conn, **device_scope_args(principal), record_id=record_id
    )
    if found is None:
        raise not_found("maintenance record")
    verdicts = await service.record_verdicts(conn, record_id=record_id)
    return RecordDetail(**found.model_dump(), verdicts=verdicts)


def _parts(body: RecordCreate | RecordCorrection) -> list[Part]:
    return [Part(p.component, p.model, PartChange(p.change), p.safety) for p in body.parts]


async def _submit(
    ctx: Any,
    principal: Principal,
    conn: Conn,
    *,
    device_id: str,
    technician_id: int,
    body: Any,
    corrects_id: int | None = None,
    reason: str | None = None,
) -> RecordOut:
    try:
        saved, _ = await run_sync(
            ctx,
            maintenance_flows.submit_record,
            device_id=device_id,
            technician_id=technician_id,
            tier=body.tier,
            claimed_start=body.claimed_start,
            claimed_end=body.claimed_end,
            checklist_done=body.checklist_done,
            parts=_parts(body),
            notes=body.notes,
            recorded_by=principal.username,
            at=ctx.clock.now(),
            corrects_id=corrects_id,
            correction_reason=reason,
        )
    except RecordError as exc:
        raise refused(exc) from None
    found = await service.get_scoped_record(
        conn, **device_scope_args(principal), record_id=saved.id
    )
    assert found is not None
    return found


@router.post(
    "/records",
    response_model=RecordOut,
    status_code=status.HTTP_201_CREATED,
    summary="Record a maintenance visit",
    responses={**NOT_FOUND, **REFUSED},
)
async def create_record(
    body: RecordCreate, principal: Recorder, ctx: Context, conn: Conn
) -> RecordOut:
    """Saved immutably (M4) and judged against the telemetry once the visit is over (M3)."""
    if not await device_visible(conn, principal=principal, device_id=body.device_id):
        raise not_found("asset")
    technician_id = await acting_technician(conn, principal, body.technician_id)
    assert technician_id is not None  # required
    return await _submit(
        ctx, principal, conn, device_id=body.device_id, technician_id=technician_id, body=body
    )


@router.post(
    "/records/{record_id}/correct",
    response_model=RecordOut,
    status_code=status.HTTP_201_CREATED,
    summary="Correct a record with a new one that references it",
    responses={**NOT_FOUND, **REFUSED, 409: {"description": "already corrected"}},
)
async def correct_record(
    record_id: RecordId, body: RecordCorrection, principal: Recorder, ctx: Context, conn: Conn
) -> RecordOut:
    """A saved record is never edited: the correction is a new record (rule M4)."""
    old = await service.get_scoped_record(conn, **device_scope_args(principal), record_id=record_id)
    if old is None:
        raise not_found("maintenance record")
    technician_id = await acting_technician(conn, principal, body.technician_id)
    assert technician_id is not None  # required
    return await _submit(
        ctx,
        principal,
        conn,
        device_id=old.device_id,
        technician_id=technician_id,
        body=body,
        corrects_id=record_id,
        reason=body.reason,
    )


@router.post(
    "/records/{record_id}/sign-off",
    response_model=RecordOut,
    summary="Sign a record off (the user unit's safety manager)",
    responses={**NOT_FOUND, 409: {"description": "already signed off"}},
)
async def sign_off(
    record_id: RecordId, principal: SafetyManager, ctx: Context, conn: Conn
) -> RecordOut:
    """Once per record, by the safety manager of the site's user unit (rule M4)."""
    if (
        await service.get_scoped_record(conn, **device_scope_args(principal), record_id=record_id)
        is None
    ):
        raise not_found("maintenance record")
    try:
        await run_sync(
            ctx,
            maintenance_flows.sign_off,
            record_id=record_id,
            user_unit_id=principal.user_unit_id,
            signed_by=principal.display_name or principal.username,
            at=ctx.clock.now(),
        )
    except RecordError as exc:
        raise refused(exc) from None
    found = await service.get_scoped_record(
        conn, **device_scope_args(principal), record_id=record_id
    )
    assert found is not None
    return found


@router.post(
    "/lockouts/{device_id}/override",
    response_model=OverrideOut,
    summary="Lift a lockout with an authorised, logged override",
    responses={**NOT_FOUND, 409: {"description": "nothing to override"}},
)
async def override_lockout(
    device_id: DeviceId, body: OverrideRequest, principal: Overrider, ctx: Context, conn: Conn
) -> OverrideOut:
    """Rule M6: the reason and the user go to the compliance log; a release is sent when a
    lockout command was issued."""
    if not await device_visible(conn, principal=principal, device_id=device_id):
        raise not_found("asset")
    try:
        release_id = await run_sync(
            ctx,
            maintenance_flows.override_lockout,
            device_id=device_id,
            user_id=principal.user_id,
            reason=body.reason,
            at=ctx.clock.now(),
        )
    except RecordError as exc:
        code = status.HTTP_409_CONFLICT if "no lockout" in str(exc) else status.HTTP_400_BAD_REQUEST
        raise HTTPException(code, detail=str(exc)) from None
    state = await service.escalation_state(conn, device_id=device_id)
    return OverrideOut(device_id=device_id, state=state or "unknown", release_command_id=release_id)
