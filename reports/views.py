"""KPI reports (rules R7, A4) and the monthly review of complaints (S5), as JSON or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel

from api.auth.models import Principal, Role
from api.deps import Conn, Context, CurrentPrincipal, require_roles, run_sync
from api.scope import device_scope_args
from compliance.rescue import flows as rescue_flows
from reports import service
from reports.models import CoverageRowOut, MonthlyFirmRow, RescueKpiRow
from workorders import service as workorders
from workorders.models import ComplaintReviewRow

router = APIRouter(prefix="/reports", tags=["reports"])

Month = Annotated[
    str | None,
    Query(pattern=r"^[1-9]\d{3}-(0[1-9]|1[0-2])$", description="YYYY-MM (months at each site)"),
]
Format = Annotated[Literal["json", "csv"], Query(description="json or csv")]
KpiReader = Annotated[
    Principal,
    require_roles(Role.ADMIN, Role.REGULATOR, Role.FIRM_MANAGER, Role.DISPATCHER),
]
CSV = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}


def parse_month(text: str) -> date:
    """First day of a YYYY-MM month."""
    year, month = text.split("-")
    return date(int(year), int(month), 1)


def as_csv(rows: Sequence[BaseModel], model: type[BaseModel], name: str) -> Response:
    """Rows as a CSV download, one column per field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = list(model.model_fields)
    writer.writerow(columns)
    for row in rows:
        values = row.model_dump(mode="json")
        writer.writerow(["" if values[c] is None else values[c] for c in columns])
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


@router.get(
    "/rescue-kpis",
    response_model=list[RescueKpiRow],
    summary="Rescue KPIs per firm, region and month (R7)",
    responses=CSV,
)
async def rescue_kpis(
    principal: KpiReader,
    ctx: Context,
    conn: Conn,
    first: Month = None,
    last: Month = None,
    format: Format = "json",
) -> list[RescueKpiRow] | Response:
    """Share answered within 3 minutes, share on site by the deadline, mean and p90 arrival,
    mean time to release. A firm sees its own rows, a regulator its region's; default: the
    last twelve months of the platform clock."""
    today = ctx.clock.now().date()
    last_month = parse_month(last) if last else today.replace(day=1)
    first_month = parse_month(first) if first else date(last_month.year - 1, last_month.month, 1)
    if first_month > last_month:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="first must not be after last")
    # a regulator reads its jurisdiction, a firm's people their firm, an admin everything
    if principal.role is Role.ADMIN:
        of, party = "all", None
    elif principal.role is Role.REGULATOR:
        of, party = "jurisdiction", principal.jurisdiction_id
    else:  # a firm's people their firm; any other role has none, so sees no row
        of, party = "firm", principal.firm_id
    rows = await service.rescue_kpis(
        conn, of=of, party_id=party, first=first_month, last=last_month
    )
    if format == "csv":
        return as_csv(rows, RescueKpiRow, f"rescue-kpis-{first_month:%Y-%m}-{last_month:%Y-%m}")
    return rows


@router.get(
    "/monthly",
    response_model=list[MonthlyFirmRow],
    summary="Monthly firm report (A4)",
    responses=CSV,
)
async def monthly(
    principal: CurrentPrincipal,
    ctx: Context,
    conn: Conn,
    month: Month = None,
    format: Format = "json",
) -> list[MonthlyFirmRow] | Response:
    """Per firm: verified visits, flagged records, overdue elevators, on-time maintenance rate,
    lockouts and overrides, entrapments and their deadline compliance, drills; over the
    elevators in the caller's scope (rule A2). Default: the platform clock's month."""
    chosen = parse_month(month) if month else ctx.clock.now().date().replace(day=1)
    rows = await service.monthly_firm_report(conn, **device_scope_args(principal), month=chosen)
    if format == "csv":
        return as_csv(rows, MonthlyFirmRow, f"monthly-{chosen:%Y-%m}")
    return rows


@router.get(
    "/complaints",
    response_model=list[ComplaintReviewRow],
    summary="Monthly review of complaints (S5)",
    responses=CSV,
)
async def complaints_review(
    principal: CurrentPrincipal,
    ctx: Context,
    conn: Conn,
    month: Month = None,
    format: Format = "json",
) -> list[ComplaintReviewRow] | Response:
    """The complaints received in a month (default: last month, on the platform clock) about
    assets in the caller's scope: cause, responsible party, answer and outcome in time (S3),
    follow-up work, and whether the asset had a repeat fault in the month (S5)."""
    if month:
        chosen = parse_month(month)
    else:
        this_month = ctx.clock.now().date().replace(day=1)
        chosen = (this_month - timedelta(days=1)).replace(day=1)
    first, after = service.month_bounds(chosen)
    rows = await workorders.complaints_of_month(
        conn, **device_scope_args(principal), first=first, after=after
    )
    if format == "csv":
        return as_csv(rows, ComplaintReviewRow, f"complaints-{chosen:%Y-%m}")
    return rows


@router.get(
    "/coverage",
    response_model=list[CoverageRowOut],
    summary="Rescue coverage: each contracted elevator against its deadline (R8)",
    responses=CSV,
)
async def coverage(
    principal: KpiReader, ctx: Context, conn: Conn, format: Format = "json"
) -> list[CoverageRowOut] | Response:
    """Each contracted elevator's estimated travel time from its firm's nearest service point
    (technicians' homes where a firm has none) against its rescue deadline; a firm sees its
    own elevators, a regulator its jurisdiction's (rule A2)."""
    visible = await service.devices_in_scope(conn, **device_scope_args(principal))
    rows = await run_sync(
        ctx, rescue_flows.coverage, estimator=rescue_flows.StraightLineEstimator()
    )
    out = [
        CoverageRowOut.model_validate(row, from_attributes=True)
        for row in rows
        if row.device_id in visible
    ]
    if format == "csv":
        return as_csv(out, CoverageRowOut, "rescue-coverage")
    return out
