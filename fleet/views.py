"""``/api/v1/fleet/...``: create, update, retire, get and list every kind of registry record,
scoped by rule A2 (fleet.flows.WRITERS says who writes what).

Each kind gets the same five routes; the request body is the kind's record (fleet.models), whose
references are natural keys. A composite key is written as path segments:
``/fleet/contracts/lift-1/2026-01-05``, ``/fleet/components/lift-1/safety_gear``.

(No ``from __future__ import annotations``: the routes' body types are made per kind in a loop,
and FastAPI must see them as objects.)
"""

import math
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Body, HTTPException, Path, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, create_model

from api.deps import Conn, Context, CurrentPrincipal, not_found, run_sync, send
from api.scope import device_scope, device_scope_args
from fleet import flows, service
from fleet.models import (
    KINDS,
    Asset,
    AssetPage,
    Event,
    FleetError,
    FleetRecord,
    Kind,
    NotFound,
    TelemetrySeries,
)
from vigil.catalog import DeviceKind
from vigil.catalog import metric as catalog_metric
from vigil.clock import Instant

registry_router = APIRouter(prefix="/fleet", tags=["fleet"])


class RowMeta(BaseModel):
    """What the registry adds to every record it returns."""

    model_config = ConfigDict(extra="allow")

    row_id: int | None = None
    retired_at: datetime | None = None


def _access(principal: Any) -> flows.Access:
    scope = device_scope(principal)
    return flows.Access(viewer=principal, devices=scope.condition, params=scope.params)


FORBIDDEN = {403: {"description": "the caller's role may not read or write this kind"}}
MISSING = {404: {"description": "no such record in the caller's scope"}}
CONFLICT = {409: {"description": "it exists already, or a constraint refuses it"}}


def _problem_response(exc: FleetError) -> JSONResponse:
    detail = [
        {"loc": ["body", p.column] if p.column else ["body"], "msg": p.reason, "type": "fleet"}
        for p in exc.problems
    ]
    exists = any("already exists" in p.reason for p in exc.problems)
    code = status.HTTP_409_CONFLICT if exists else 422
    return JSONResponse({"detail": detail}, status_code=code)


async def _call(ctx: Any, fn: Any, **kwargs: Any) -> Any:
    """Run a flow; its refusals become 403, 404, 409 or 422 with the field named."""
    try:
        return await run_sync(ctx, fn, **kwargs)
    except flows.Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except FleetError as exc:
        return _problem_response(exc)
    except psycopg.errors.IntegrityError as exc:  # a constraint no check above foresaw
        raise HTTPException(status.HTTP_409_CONFLICT, detail=exc.diag.message_primary) from None


def _key(kind: Kind, path: str) -> tuple[Any, ...]:
    parts = path.split("/")
    if len(parts) != len(kind.key) or not all(parts):
        shape = "/".join("{" + f + "}" for f in kind.key)
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{kind.name} are named {shape}")
    if kind.name == "contracts":
        try:
            return (parts[0], date.fromisoformat(parts[1]))
        except ValueError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="starts_on is a date") from None
    return tuple(parts)


def _routes(kind: Kind) -> None:
    record_type: type[FleetRecord] = kind.record
    out_type = create_model(f"{record_type.__name__}Out", __base__=(RowMeta, record_type))
    out_type.model_config = ConfigDict(extra="allow")
    fields = ", ".join(kind.key)
    noun = kind.name.replace("_", " ")

    async def list_kind(
        principal: CurrentPrincipal,
        ctx: Context,
        include_retired: bool = False,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        return await _call(
            ctx,
            flows.read_records,
            kind=kind,
            access=_access(principal),
            include_retired=include_retired,
            limit=limit,
            offset=offset,
        )

    async def get_one(key: str, principal: CurrentPrincipal, ctx: Context) -> Any:
        return await _call(
            ctx, flows.read_record, kind=kind, key=_key(kind, key), access=_access(principal)
        )

    async def create(
        record: Annotated[record_type, Body()],  # type: ignore[valid-type]
        principal: CurrentPrincipal,
        ctx: Context,
    ) -> Any:
        result = await _call(
            ctx,
            flows.create_record,
            kind=kind,
            record=record,
            access=_access(principal),
            at=ctx.clock.now(),
        )
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse(
            out_type.model_validate(result).model_dump(mode="json"), status.HTTP_201_CREATED
        )

    async def update(
        key: str,
        changes: Annotated[dict[str, Any], Body(description=f"fields of the {noun} to change")],
        principal: CurrentPrincipal,
        ctx: Context,
    ) -> Any:
        unknown = sorted(set(changes) - set(kind.fields))
        if unknown:
            return _problem_response(
                FleetError([flows.Problem("unknown field", column) for column in unknown])
            )
        return await _call(
            ctx,
            flows.update_record,
            kind=kind,
            key=_key(kind, key),
            changes=changes,
            access=_access(principal),
            at=ctx.clock.now(),
        )

    async def retire(key: str, principal: CurrentPrincipal, ctx: Context) -> Any:
        return await _call(
            ctx,
            flows.retire_record,
            kind=kind,
            key=_key(kind, key),
            access=_access(principal),
            at=ctx.clock.now(),
        )

    base = f"/{kind.name}"
    one = base + "/{key:path}"
    registry_router.add_api_route(
        base,
        list_kind,
        methods=["GET"],
        response_model=list[out_type],
        summary=f"List {noun} in scope",
        responses=FORBIDDEN,
    )
    registry_router.add_api_route(
        base,
        create,
        methods=["POST"],
        status_code=201,
        response_model=out_type,
        summary=f"Create one of the {noun}",
        responses={**FORBIDDEN, **CONFLICT},
    )
    registry_router.add_api_route(
        one + "/retire",
        retire,
        methods=["POST"],
        summary=f"Retire one of the {noun} ({fields}); history stays",
        responses={**FORBIDDEN, **MISSING, **CONFLICT},
    )
    registry_router.add_api_route(
        one,
        get_one,
        methods=["GET"],
        response_model=out_type,
        summary=f"One of the {noun} by {fields}",
        responses={**FORBIDDEN, **MISSING},
    )
    registry_router.add_api_route(
        one,
        update,
        methods=["PATCH"],
        response_model=out_type,
        summary=f"Change fields of one of the {noun}",
        responses={**FORBIDDEN, **MISSING, **CONFLICT},
    )


for _kind in KINDS.values():
    _routes(_kind)


# -- /assets: devices with their live state, events and telemetry (the console's grid) ---------

assets_router = APIRouter(tags=["assets"])

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DeviceId = Annotated[str, Path(pattern=DEVICE_ID, description="device id")]

# what a fleet grid tile shows, besides the condition
SUMMARY_METRICS = ("floor", "service_mode", "fault_code", "lockout_state", "lamp_on", "lamps_out")
MAX_RANGE = timedelta(days=366)
MAX_BUCKETS = 10_000
DEFAULT_BUCKETS = 300
DEFAULT_RANGE = timedelta(hours=1)

NOT_FOUND = {404: {"description": "no such asset in the caller's scope"}}
BAD_RANGE = {400: {"description": "bad time range, bucket or metric"}}


def bad_request(detail: str) -> HTTPException:
    """400 with a message."""
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=detail)


def time_range(
    *, start: datetime | None, end: datetime | None, now: datetime, default: timedelta
) -> tuple[datetime, datetime]:
    """A validated [start, end) (each an ``Instant``: aware): ordered, at most MAX_RANGE long;
    defaults end at now."""
    end = end or now
    start = start or end - default
    if start >= end:
        raise bad_request("start must be before end")
    if end - start > MAX_RANGE:
        raise bad_request(f"the range may cover at most {MAX_RANGE.days} days")
    return start, end


@assets_router.get(
    "/assets", response_model=AssetPage, summary="List the caller's assets with live state"
)
async def list_assets(
    principal: CurrentPrincipal,
    conn: Conn,
    kind: DeviceKind | None = None,
    site_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    search: Annotated[
        str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]*$", description="id contains")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    state: Annotated[
        Literal["all", "summary", "none"],
        Query(description=f"which latest values: all, none, or {', '.join(SUMMARY_METRICS)}"),
    ] = "all",
) -> Response:
    """The fleet grid: every asset in scope (rule A2), its condition and latest values."""
    page = await service.list_assets_json(
        conn,
        **device_scope_args(principal),
        kind=kind.value if kind else None,
        site_id=site_id,
        search=search,
        limit=limit,
        offset=offset,
        metrics={"all": None, "summary": SUMMARY_METRICS, "none": ()}[state],
    )
    # built as JSON by the database in the AssetPage shape: sent as is
    return Response(page, media_type="application/json")


@assets_router.get(
    "/assets/{device_id}",
    response_model=Asset,
    summary="One asset with its live state",
    responses=NOT_FOUND,
)
async def get_asset(device_id: DeviceId, principal: CurrentPrincipal, conn: Conn) -> dict[str, Any]:
    """404 when the asset does not exist or is outside the caller's scope (rule A2)."""
    asset = await service.get_asset(conn, **device_scope_args(principal), device_id=device_id)
    if asset is None:
        raise not_found("asset")
    return asset


@assets_router.get(
    "/assets/{device_id}/events",
    response_model=list[Event],
    summary="State transitions of an asset, newest first",
    responses={**NOT_FOUND, **BAD_RANGE},
)
async def list_events(
    device_id: DeviceId,
    principal: CurrentPrincipal,
    ctx: Context,
    conn: Conn,
    start: Instant | None = None,
    end: Instant | None = None,
    metric: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> Response:
    """Events in [start, end); by default the last 24 hours."""
    start, end = time_range(start=start, end=end, now=ctx.clock.now(), default=timedelta(days=1))
    if await service.get_asset(conn, **device_scope_args(principal), device_id=device_id) is None:
        raise not_found("asset")
    events = await service.list_events(
        conn,
        **device_scope_args(principal),
        device_id=device_id,
        start=start,
        end=end,
        metric=metric,
        limit=limit,
    )
    return send(list[Event], events)


@assets_router.get(
    "/assets/{device_id}/telemetry",
    response_model=TelemetrySeries,
    summary="One metric of an asset over a time range, bucketed",
    responses={**NOT_FOUND, **BAD_RANGE},
)
async def telemetry(
    device_id: DeviceId,
    principal: CurrentPrincipal,
    ctx: Context,
    conn: Conn,
    metric: Annotated[str, Query(pattern=r"^[a-z0-9_]{1,64}$", description="metric name")],
    start: Annotated[Instant | None, Query(description="default: end - 1 h")] = None,
    end: Annotated[Instant | None, Query(description="default: now")] = None,
    bucket_s: Annotated[
        int | None,
        Query(ge=1, le=31 * 86400, description=f"bucket width; default: range / {DEFAULT_BUCKETS}"),
    ] = None,
) -> Response:
    """Average, min, max, last and count per ``date_bin`` bucket in [start, end)."""
    start, end = time_range(start=start, end=end, now=ctx.clock.now(), default=DEFAULT_RANGE)
    asset = await service.get_asset(conn, **device_scope_args(principal), device_id=device_id)
    if asset is None:
        raise not_found("asset")
    known = catalog_metric(asset["kind"], metric)
    if known is None:
        raise bad_request(f"{asset['kind']} has no metric {metric!r}")
    span = (end - start).total_seconds()
    if bucket_s is None:
        bucket_s = max(1, math.ceil(span / DEFAULT_BUCKETS))
    elif span / bucket_s > MAX_BUCKETS:
        raise bad_request(
            f"{math.ceil(span / bucket_s)} buckets requested; at most {MAX_BUCKETS}: "
            "widen bucket_s or narrow the range"
        )
    buckets = await service.telemetry_buckets(
        conn,
        **device_scope_args(principal),
        device_id=device_id,
        metric=metric,
        start=start,
        end=end,
        bucket_s=bucket_s,
    )
    series = TelemetrySeries(
        device_id=device_id,
        metric=metric,
        unit=known.unit,
        start=start,
        end=end,
        bucket_s=bucket_s,
        buckets=buckets,
    )
    return send(TelemetrySeries, series)


# The app mounts one router per domain: the registry's and the assets'.
router = APIRouter()
router.include_router(registry_router)
router.include_router(assets_router)
