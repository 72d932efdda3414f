"""Work orders: the queue with its deadlines, a timeline per order, and each step of the
lifecycle (rules S1-S6), scoped by rule A2."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from api.auth.models import Principal, Role
from api.deps import (
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
from workorders import flows, service
from workorders.models import (
    CALLBACK_RETRY_H,
    MANUAL_ORIGINS,
    OPEN_STATUSES,
    AnalysisIn,
    AssignIn,
    CalendarDay,
    CalendarDayIn,
    CallbackDue,
    CallbackIn,
    CancelIn,
    CheckInIn,
    ComplaintCreate,
    ComplaintDetail,
    ComplaintOut,
    Level,
    NoteIn,
    ProfileIn,
    ProfileOut,
    SolutionIn,
    Source,
    Status,
    Targets,
    WorkOrderCreate,
    WorkOrderDetail,
    WorkOrderError,
    WorkOrderNotFound,
    WorkOrderOut,
)

work_orders_router = APIRouter(prefix="/work-orders", tags=["work orders"])
complaints_router = APIRouter(prefix="/complaints", tags=["work orders"])

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


@work_orders_router.get(
    "", response_model=list[WorkOrderOut], summary="Work orders in the caller's scope"
)
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


@work_orders_router.get(
    "/callbacks-due",
    response_model=list[CallbackDue],
    summary="Customers to call back now (rule S4)",
)
async def callbacks_due(principal: CurrentPrincipal, ctx: Context, conn: Conn) -> Response:
    """Resolved work in scope whose customer was not reached yet: at once after the
    resolution, again 4 hours after an unreached call."""
    found = await service.callbacks_due(
        conn,
        **device_scope_args(principal),
        now=ctx.clock.now(),
        retry=timedelta(hours=CALLBACK_RETRY_H),
    )
    return send(list[CallbackDue], found)


@work_orders_router.get(
    "/{work_order_id}",
    response_model=WorkOrderDetail,
    summary="One work order with its timeline",
    responses=NOT_FOUND,
)
async def get_work_order(
    work_order_id: WorkOrderId, principal: CurrentPrincipal, ctx: Context, conn: Conn
) -> WorkOrderDetail:
    """404 when missing or outside the caller's scope (rule A2)."""
    found = await _scoped(conn, principal, work_order_id)
    steps = await run_sync(ctx, service.steps, work_order_id=work_order_id)
    return WorkOrderDetail(**found.model_dump(), steps=steps)


@work_orders_router.post(
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
        raise invalid(
            "body",
            "origin",
            msg=f"origin must be one of {sorted(str(o) for o in MANUAL_ORIGINS)}",
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


@work_orders_router.post(
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


@work_orders_router.post(
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


@work_orders_router.post(
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


@work_orders_router.post(
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


@work_orders_router.post(
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


@work_orders_router.post(
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


@work_orders_router.post(
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


# -- complaints (rules S3, S5) --------------------------------------------------------------------

ComplaintId = Annotated[int, Path(ge=1, le=2**62)]
COMPLAINT_NOT_FOUND = {404: {"description": "no such complaint in the caller's scope"}}


async def _scoped_complaint(conn: Conn, principal: Principal, complaint_id: int) -> ComplaintOut:
    found = await service.get_scoped_complaint(
        conn, **device_scope_args(principal), complaint_id=complaint_id
    )
    if found is None:
        raise not_found("complaint")
    return found


async def _complaint_step(
    ctx: Any,
    conn: Conn,
    principal: Principal,
    complaint_id: int,
    action: Callable[..., Any],
    **kwargs: Any,
) -> ComplaintOut:
    await _scoped_complaint(conn, principal, complaint_id)
    try:
        await run_sync(
            ctx,
            action,
            complaint_id=complaint_id,
            at=ctx.clock.now(),
            actor=principal.username,
            **kwargs,
        )
    except WorkOrderNotFound:
        raise not_found("complaint") from None
    except WorkOrderError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return await _scoped_complaint(conn, principal, complaint_id)


@complaints_router.get(
    "", response_model=list[ComplaintOut], summary="The complaint register (rule S5)"
)
async def list_complaints(
    principal: CurrentPrincipal,
    conn: Conn,
    which: Annotated[Literal["open", "all"], Query(description="open ones, or all")] = "open",
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
) -> Response:
    """Complaints about assets in scope, the nearest outcome deadline first (rule S3)."""
    found = await service.list_scoped_complaints(
        conn, **device_scope_args(principal), open_only=which == "open", limit=limit
    )
    return send(list[ComplaintOut], found)


@complaints_router.get(
    "/{complaint_id}",
    response_model=ComplaintDetail,
    summary="One complaint with its timeline",
    responses=COMPLAINT_NOT_FOUND,
)
async def get_complaint(
    complaint_id: ComplaintId, principal: CurrentPrincipal, ctx: Context, conn: Conn
) -> ComplaintDetail:
    """404 when missing or outside the caller's scope (rule A2)."""
    found = await _scoped_complaint(conn, principal, complaint_id)
    steps = await run_sync(ctx, service.complaint_steps, complaint_id=complaint_id)
    return ComplaintDetail(**found.model_dump(), steps=steps)


@complaints_router.post(
    "",
    response_model=ComplaintOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a complaint (rule S5)",
    responses={404: {"description": "no such asset in scope"}},
)
async def register_complaint(
    body: ComplaintCreate, principal: Opener, ctx: Context, conn: Conn
) -> ComplaintOut:
    """Sets the deadlines of rule S3: answered within 24 h, the outcome back within 2 working
    days (the jurisdiction's calendar)."""
    if not await device_visible(conn, principal=principal, device_id=body.device_id):
        raise not_found("asset")
    made = await run_sync(
        ctx,
        flows.register_complaint,
        device_id=body.device_id,
        channel=body.channel,
        complainant=body.complainant,
        contact=body.contact,
        subject=body.subject,
        at=ctx.clock.now(),
        actor=principal.username,
    )
    return await _scoped_complaint(conn, principal, made.id)


@complaints_router.post(
    "/{complaint_id}/answer",
    response_model=ComplaintOut,
    summary="Answer the customer (rule S3: within 24 h)",
    responses={**COMPLAINT_NOT_FOUND, **CONFLICT},
)
async def answer_complaint(
    complaint_id: ComplaintId, body: NoteIn, principal: Dispatcher, ctx: Context, conn: Conn
) -> ComplaintOut:
    """The first answer meets the deadline."""
    return await _complaint_step(
        ctx, conn, principal, complaint_id, flows.answer_complaint, note=body.note
    )


@complaints_router.post(
    "/{complaint_id}/analysis",
    response_model=ComplaintOut,
    summary="Record the cause and the responsible party (rule S5)",
    responses={**COMPLAINT_NOT_FOUND, **CONFLICT},
)
async def analyse_complaint(
    complaint_id: ComplaintId, body: AnalysisIn, principal: Dispatcher, ctx: Context, conn: Conn
) -> ComplaintOut:
    """May be revised until a solution is agreed."""
    return await _complaint_step(
        ctx,
        conn,
        principal,
        complaint_id,
        flows.analyse_complaint,
        cause=body.cause,
        responsible_party=body.responsible_party,
        note=body.note,
    )


@complaints_router.post(
    "/{complaint_id}/solution",
    response_model=ComplaintOut,
    summary="Agree a solution; open follow-up work if it needs any (rule S5)",
    responses={**COMPLAINT_NOT_FOUND, **CONFLICT},
)
async def agree_solution(
    complaint_id: ComplaintId, body: SolutionIn, principal: Dispatcher, ctx: Context, conn: Conn
) -> ComplaintOut:
    """With ``follow_up_level``, a complaint follow-up work order opens at that level."""
    return await _complaint_step(
        ctx,
        conn,
        principal,
        complaint_id,
        flows.agree_solution,
        solution=body.solution,
        follow_up_level=Level(body.follow_up_level) if body.follow_up_level else None,
    )


@complaints_router.post(
    "/{complaint_id}/outcome",
    response_model=ComplaintOut,
    summary="Send the outcome to the customer (rule S3: within 2 working days)",
    responses={**COMPLAINT_NOT_FOUND, **CONFLICT},
)
async def send_outcome(
    complaint_id: ComplaintId, body: NoteIn, principal: Dispatcher, ctx: Context, conn: Conn
) -> ComplaintOut:
    """After a solution is agreed."""
    return await _complaint_step(
        ctx, conn, principal, complaint_id, flows.send_outcome, note=body.note
    )


@complaints_router.post(
    "/{complaint_id}/close",
    response_model=ComplaintOut,
    summary="Close a complaint tracked to its end (rule S5)",
    responses={**COMPLAINT_NOT_FOUND, **CONFLICT},
)
async def close_complaint(
    complaint_id: ComplaintId, body: NoteIn, principal: Dispatcher, ctx: Context, conn: Conn
) -> ComplaintOut:
    """409 until the outcome was sent and the follow-up work is done."""
    return await _complaint_step(
        ctx, conn, principal, complaint_id, flows.close_complaint, note=body.note
    )


# -- configuration: service-level profiles (S1) and the working-day calendar (S3) -----------------

settings_router = APIRouter(tags=["work orders"])
Admin = Annotated[Principal, require_roles(Role.ADMIN)]
ProfileCode = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


@settings_router.get(
    "/service-levels", response_model=list[ProfileOut], summary="Service-level profiles (S1)"
)
async def list_profiles(principal: CurrentPrincipal, ctx: Context) -> list[ProfileOut]:
    """Every profile a contract can name in ``terms.service_levels``, with its targets."""
    return await run_sync(ctx, service.profiles)


@settings_router.put(
    "/service-levels/{code}",
    response_model=list[ProfileOut],
    summary="Create or replace a service-level profile (admin)",
    responses={409: {"description": "the built-in profiles are RULES.md's defaults"}},
)
async def put_profile(
    code: ProfileCode, body: ProfileIn, principal: Admin, ctx: Context
) -> list[ProfileOut]:
    """The levels given replace the profile's targets; contracts name it by ``code``."""

    def save(conn: Any) -> list[ProfileOut]:
        if service.is_built_in(conn, code=code):
            raise WorkOrderError(f"{code} is built in (RULES.md's defaults): name another")
        service.save_profile(
            conn,
            code=code,
            name=body.name,
            targets={level: Targets(**t.model_dump()) for level, t in body.levels.items()},
        )
        return service.profiles(conn)

    try:
        return await run_sync(ctx, save)
    except WorkOrderError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None


JurisdictionId = Annotated[int, Path(ge=1, le=2**62)]


@settings_router.get(
    "/calendar/{jurisdiction_id}",
    response_model=list[CalendarDay],
    summary="Holidays and make-up working days of a jurisdiction (S3)",
)
async def get_calendar(
    jurisdiction_id: JurisdictionId,
    principal: CurrentPrincipal,
    ctx: Context,
    year: Annotated[int, Query(ge=2000, le=2100)],
) -> list[CalendarDay]:
    """Monday to Friday work and weekends rest, except the days listed."""
    return await run_sync(
        ctx,
        service.calendar,
        jurisdiction_id=jurisdiction_id,
        start=date(year, 1, 1),
        end=date(year, 12, 31),
    )


@settings_router.put(
    "/calendar/{jurisdiction_id}/{day}",
    response_model=CalendarDay,
    summary="Declare a holiday or a make-up working day (admin)",
    responses={404: {"description": "no such jurisdiction"}},
)
async def put_calendar_day(
    jurisdiction_id: JurisdictionId, day: date, body: CalendarDayIn, principal: Admin, ctx: Context
) -> CalendarDay:
    """Deadlines counted in working days (rule S3) follow it from now on."""

    def save(conn: Any) -> None:
        if not service.jurisdiction_exists(conn, jurisdiction_id=jurisdiction_id):
            raise WorkOrderNotFound(f"no jurisdiction {jurisdiction_id}")
        service.set_calendar_day(
            conn, jurisdiction_id=jurisdiction_id, day=day, working=body.working, name=body.name
        )

    try:
        await run_sync(ctx, save)
    except WorkOrderNotFound:
        raise not_found("jurisdiction") from None
    return CalendarDay(
        jurisdiction_id=jurisdiction_id, day=day, working=body.working, name=body.name
    )


@settings_router.delete(
    "/calendar/{jurisdiction_id}/{day}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Make a day an ordinary one again (admin)",
    responses={404: {"description": "the day was ordinary already"}},
)
async def delete_calendar_day(
    jurisdiction_id: JurisdictionId, day: date, principal: Admin, ctx: Context
) -> Response:
    """404 when nothing was declared for that day."""
    if not await run_sync(
        ctx, service.clear_calendar_day, jurisdiction_id=jurisdiction_id, day=day
    ):
        raise not_found("calendar day")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


router = APIRouter()
router.include_router(work_orders_router)
router.include_router(complaints_router)
router.include_router(settings_router)
