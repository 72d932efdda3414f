"""Work orders: the queue with its deadlines, a timeline per order, and each step of the
lifecycle (rules S1-S6), scoped by rule A2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from api.auth.models import Principal, Role
from api.deps import Conn, Context, CurrentPrincipal, not_found, require_roles, run_sync, send
from api.scope import device_scope_args, device_visible
from workorders import flows, service
from workorders.models import (
    MANUAL_ORIGINS,
    OPEN_STATUSES,
    AssignIn,
    CallbackIn,
    CancelIn,
    CheckInIn,
    Level,
    NoteIn,
    Source,
    Status,
    WorkOrderCreate,
    WorkOrderDetail,
    WorkOrderError,
    WorkOrderNotFound,
    WorkOrderOut,
)

router = APIRouter(prefix="/work-orders", tags=["work orders"])

WorkOrderId = Annotated[int, Path(ge=1, le=2**62)]
# the firm's people act on work orders; a building's safety manager may call one in
Opener = Annotated[
    Principal,
    require_roles(
        Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER, Role.TECHNICIAN, Role.SAFETY_MANAGER
    ),
]
Dispatcher = Annotated[Principal, require_roles(Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER)]
Worker = Annotated[
    Principal, require_roles(Role.ADMIN, Role.FIRM_MANAGER, Role.DISPATCHER, Role.TECHNICIAN)
]
NOT_FOUND = {404: {"description": "no such work order in the caller's scope"}}
CONFLICT = {409: {"description": "the work order cannot take this step now; the message says why"}}


async def _scoped(conn: Conn, principal: Principal, work_order_id: int) -> WorkOrderOut:
    found = await service.get_scoped(
        conn, **device_scope_args(principal), work_order_id=work_order_id
    )
    if found is None:
        raise not_found("work order")
    return found


async def _step(
    ctx: Any,
    conn: Conn,
    principal: Principal,
    work_order_id: int,
    action: Callable[..., Any],
    **kwargs: Any,
) -> WorkOrderOut:
    await _scoped(conn, principal, work_order_id)
    try:
        await run_sync(ctx, action, work_order_id=work_order_id, at=ctx.clock.now(), **kwargs)
    except WorkOrderNotFound:
        raise not_found("work order") from None
    except WorkOrderError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return await _scoped(conn, principal, work_order_id)


def _technician(principal: Principal, order: WorkOrderOut) -> int:
    """Who takes a technician's step: the calling technician, or (for the duty line on the
    phone) the one assigned."""
    if principal.role is Role.TECHNICIAN:
        assert principal.technician_id is not None
        return principal.technician_id
    if order.technician_id is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"work order {order.id} is not assigned"
        )
    return order.technician_id


@router.get("", response_model=list[WorkOrderOut], summary="Work orders in the caller's scope")
async def list_work_orders(
    principal: CurrentPrincipal,
    conn: Conn,
    which: Annotated[
        Literal["open", "resolved", "all"],
        Query(description="open ones (not yet resolved), resolved and awaiting a callback, or all"),
    ] = "open",
    level: Annotated[int | None, Query(ge=1, le=4, description="rule S1 level")] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
) -> Response:
    """The queue, the nearest deadline first (rule S1), each with the deadlines it missed."""
    statuses = {
        "open": sorted(OPEN_STATUSES),
        "resolved": [Status.RESOLVED],
        "all": None,
    }[which]
    found = await service.list_scoped(
        conn, **device_scope_args(principal), statuses=statuses, level=level, limit=limit
    )
    return send(list[WorkOrderOut], found)


@router.get(
    "/{work_order_id}",
    response_model=WorkOrderDetail,
    summary="One work order with its timeline",
    responses=NOT_FOUND,
)
async def get_work_order(
    work_order_id: WorkOrderId, principal: CurrentPrincipal, conn: Conn
) -> WorkOrderDetail:
    """404 when missing or outside the caller's scope (rule A2)."""
    found = await _scoped(conn, principal, work_order_id)
    return WorkOrderDetail(
        **found.model_dump(), steps=await service.scoped_steps(conn, work_order_id=work_order_id)
    )


@router.post(
    "",
    response_model=WorkOrderOut,
    status_code=status.HTTP_201_CREATED,
    summary="Open work by hand (phone call, complaint, patrol, console)",
    responses={404: {"description": "no such asset in scope"}, **CONFLICT},
)
async def open_work_order(
    body: WorkOrderCreate, principal: Opener, ctx: Context, conn: Conn, response: Response
) -> WorkOrderOut:
    """Opens a work order, or counts the report on the device's open order of the same cause
    (200 instead of 201)."""
    if body.origin not in MANUAL_ORIGINS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            detail=f"origin must be one of {sorted(str(o) for o in MANUAL_ORIGINS)}",
        )
    if not await device_visible(conn, principal=principal, device_id=body.device_id):
        raise not_found("asset")
    source = Source(
        device_id=body.device_id,
        kind=body.kind,
        cause=body.cause or str(body.kind),
        level=Level(body.level),
        origin=body.origin,
        source_ref=None,
        title=body.title,
        details={"via": principal.via},
    )
    try:
        opened = await run_sync(
            ctx,
            flows.open_or_repeat,
            source=source,
            at=ctx.clock.now(),
            actor=principal.username,
            note=body.note,
        )
    except WorkOrderError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if not opened.created:
        response.status_code = status.HTTP_200_OK
    return await _scoped(conn, principal, opened.work_order.id)


@router.post(
    "/{work_order_id}/respond",
    response_model=WorkOrderOut,
    summary="The duty line answers (rule S1 respond deadline)",
    responses={**NOT_FOUND, **CONFLICT},
)
async def respond(
    work_order_id: WorkOrderId, body: NoteIn, principal: Worker, ctx: Context, conn: Conn
) -> WorkOrderOut:
    """Meets the respond deadline; the status stays."""
    return await _step(
        ctx, conn, principal, work_order_id, flows.respond, actor=principal.username, note=body.note
    )


@router.post(
    "/{work_order_id}/assign",
    response_model=WorkOrderOut,
    summary="Assign a qualified technician of the firm (rule M10)",
    responses={**NOT_FOUND, **CONFLICT},
)
async def assign(
    work_order_id: WorkOrderId, body: AssignIn, principal: Dispatcher, ctx: Context, conn: Conn
) -> WorkOrderOut:
    """409 when the technician is of another firm or not qualified today."""
    return await _step(
        ctx,
        conn,
        principal,
        work_order_id,
        flows.assign,
        technician_id=body.technician_id,
        actor=principal.username,
        note=body.note,
    )


@router.post(
    "/{work_order_id}/accept",
    response_model=WorkOrderOut,
    summary="The assigned technician takes the work",
    responses={**NOT_FOUND, **CONFLICT},
)
async def accept(
    work_order_id: WorkOrderId, body: NoteIn, principal: Worker, ctx: Context, conn: Conn
) -> WorkOrderOut:
    """A technician accepts for itself; the duty line for the one assigned."""
    order = await _scoped(conn, principal, work_order_id)
    return await _step(
        ctx,
        conn,
        principal,
        work_order_id,
        flows.accept,
        technician_id=_technician(principal, order),
        note=body.note,
    )


@router.post(
    "/{work_order_id}/check-in",
    response_model=WorkOrderOut,
    summary="The technician is on site (measured position or inspection mode)",
    responses={**NOT_FOUND, **CONFLICT},
)
async def check_in(
    work_order_id: WorkOrderId,
    body: CheckInIn,
    principal: Annotated[Principal, require_roles(Role.TECHNICIAN)],
    ctx: Context,
    conn: Conn,
) -> WorkOrderOut:
    """Only the technician checks in, with its own measured position at the site, or with the
    lift switched to inspection mode after accepting; nobody fills a position in for them."""
    order = await _scoped(conn, principal, work_order_id)
    return await _step(
        ctx,
        conn,
        principal,
        work_order_id,
        flows.check_in,
        technician_id=_technician(principal, order),
        latitude=body.latitude,
        longitude=body.longitude,
        note=body.note,
    )


@router.post(
    "/{work_order_id}/resolve",
    response_model=WorkOrderOut,
    summary="The work is done: service restored",
    responses={**NOT_FOUND, **CONFLICT},
)
async def resolve(
    work_order_id: WorkOrderId, body: NoteIn, principal: Worker, ctx: Context, conn: Conn
) -> WorkOrderOut:
    """Only from on site; the escalation stops (rule S2)."""
    return await _step(
        ctx, conn, principal, work_order_id, flows.resolve, actor=principal.username, note=body.note
    )


@router.post(
    "/{work_order_id}/callback",
    response_model=WorkOrderOut,
    summary="Call the customer back (rule S4); a reached call closes the order",
    responses={**NOT_FOUND, **CONFLICT},
)
async def callback(
    work_order_id: WorkOrderId, body: CallbackIn, principal: Dispatcher, ctx: Context, conn: Conn
) -> WorkOrderOut:
    """A call that reached the customer records their satisfaction (1-5) and closes the order;
    one that did not is kept, and the order waits for the next try."""
    return await _step(
        ctx,
        conn,
        principal,
        work_order_id,
        flows.callback,
        actor=principal.username,
        reached=body.reached,
        satisfaction=body.satisfaction,
        note=body.note,
    )


@router.post(
    "/{work_order_id}/cancel",
    response_model=WorkOrderOut,
    summary="Cancel work that is not needed (the reason is kept)",
    responses={**NOT_FOUND, **CONFLICT},
)
async def cancel(
    work_order_id: WorkOrderId, body: CancelIn, principal: Dispatcher, ctx: Context, conn: Conn
) -> WorkOrderOut:
    """Not after the work is resolved."""
    return await _step(
        ctx,
        conn,
        principal,
        work_order_id,
        flows.cancel,
        actor=principal.username,
        reason=body.reason,
    )
