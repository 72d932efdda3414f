"""Report types of the API."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from workorders.models import WorkFigures


class RescueKpiRow(BaseModel):
    """Rule R7: one firm, region (jurisdiction) and month; false alarms excluded."""

    firm_id: int | None
    firm_name: str | None
    jurisdiction_id: int
    month: date
    incidents: int
    answered_within_3_min: float | None = Field(description="share accepted within 3 minutes")
    arrived_within_deadline: float | None = Field(description="share on site by the deadline")
    mean_arrival_min: float | None
    p90_arrival_min: float | None
    mean_release_min: float | None


class MaintenanceFigures(BaseModel):
    """Rule A4: one firm's month, over the elevators in the caller's scope."""

    firm_id: int
    firm_name: str
    month: date
    elevators: int
    verified_visits: int = Field(description="records whose verdict in force is verified (M3)")
    flagged_records: int = Field(description="records judged anything but verified")
    overdue_elevators: int = Field(description="elevators that went overdue in the month (M5)")
    on_time_maintenance_rate: float | None = Field(
        description="share of elevators that never went overdue in the month"
    )
    lockouts: int = Field(description="elevators locked out or recommended for lockout (M6)")
    overrides: int = Field(description="lockout overrides (M6)")
    entrapments: int = Field(description="incidents other than false alarms (R1)")
    entrapments_within_deadline: float | None = Field(
        description="share of entrapments with someone on site by the deadline (R2)"
    )
    drills: int = Field(description="rescue drills held (M8)")


class MonthlyFirmRow(WorkFigures, MaintenanceFigures):
    """Rule A4: one firm's month, over the assets in the caller's scope: maintenance, rescue
    and drills of its elevators, then its work orders, complaints and callbacks."""


class CoverageRowOut(BaseModel):
    """Rule R8: one contracted elevator's travel time from its firm's nearest service point."""

    device_id: str
    firm_id: int
    tier: str
    deadline_minutes: int
    nearest_point: str | None
    travel_minutes: float | None
    within_deadline: bool
