"""Assets, their live state, events and telemetry (all scoped by rule A2)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from api.assets import service
from api.assets.models import Asset, AssetPage, Event, TelemetrySeries
from api.deps import Conn, Context, CurrentPrincipal, not_found, send
from vigil.catalog import DeviceKind
from vigil.catalog import metric as catalog_metric

router = APIRouter(tags=["assets"])

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
    """A validated [start, end): aware, ordered, at most MAX_RANGE long; defaults end at now."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise bad_request(f"{name} needs a timezone, e.g. 2026-01-05T08:00:00Z")
    end = end or now
    start = start or end - default
    if start >= end:
        raise bad_request("start must be before end")
    if end - start > MAX_RANGE:
        raise bad_request(f"the range may cover at most {MAX_RANGE.days} days")
    return start, end


@router.get("/assets", response_model=AssetPage, summary="List the caller's assets with live state")
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
        principal=principal,
        kind=kind.value if kind else None,
        site_id=site_id,
        search=search,
        limit=limit,
        offset=offset,
        metrics={"all": None, "summary": SUMMARY_METRICS, "none": ()}[state],
    )
    # built as JSON by the database in the AssetPage shape: sent as is
    return Response(page, media_type="application/json")


@router.get(
    "/assets/{device_id}",
    response_model=Asset,
    summary="One asset with its live state",
    responses=NOT_FOUND,
)
async def get_asset(device_id: DeviceId, principal: CurrentPrincipal, conn: Conn) -> dict[str, Any]:
    """404 when the asset does not exist or is outside the caller's scope (rule A2)."""
    asset = await service.get_asset(conn, principal=principal, device_id=device_id)
    if asset is None:
        raise not_found("asset")
    return asset


@router.get(
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
    start: datetime | None = None,
    end: datetime | None = None,
    metric: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> Response:
    """Events in [start, end); by default the last 24 hours."""
    start, end = time_range(start=start, end=end, now=ctx.clock.now(), default=timedelta(days=1))
    if await service.get_asset(conn, principal=principal, device_id=device_id) is None:
        raise not_found("asset")
    events = await service.list_events(
        conn,
        principal=principal,
        device_id=device_id,
        start=start,
        end=end,
        metric=metric,
        limit=limit,
    )
    return send(list[Event], events)


@router.get(
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
    start: Annotated[datetime | None, Query(description="default: end - 1 h")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    bucket_s: Annotated[
        int | None,
        Query(ge=1, le=31 * 86400, description=f"bucket width; default: range / {DEFAULT_BUCKETS}"),
    ] = None,
) -> Response:
    """Average, min, max, last and count per ``date_bin`` bucket in [start, end)."""
    start, end = time_range(start=start, end=end, now=ctx.clock.now(), default=DEFAULT_RANGE)
    asset = await service.get_asset(conn, principal=principal, device_id=device_id)
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
        principal=principal,
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
