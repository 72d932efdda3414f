"""Incident types of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from api.auth.models import Strict


class IncidentOut(BaseModel):
    """A rescue incident (rule R6: reported → dispatched → accepted → arrived → released →
    closed, or false alarm)."""

    id: int
    device_id: str
    site_id: int
    site_name: str
    firm_id: int | None
    trigger: str
    tier: str
    deadline_minutes: int
    clock_from: str
    reported_at: datetime
    arrival_deadline: datetime | None = Field(description="rule R2: on site by then")
    status: str
    alarm_id: int | None
    closed_at: datetime | None
    breached: bool = Field(description="rule R6: a breach stays a breach")
    technician_id: int | None = Field(description="the technician dispatched or accepted")
    technician_name: str | None
    accept_by: datetime | None = Field(description="rule R4: the dispatch awaits an answer")
    arrived_at: datetime | None
    arrival_proven: bool | None = Field(
        default=None,
        description="rule R6: arrival proved by the technician's measured position or by "
        "inspection mode at the car; false when recorded without either",
    )
    follows_incident_id: int | None = Field(
        default=None, description="rule R1: the released incident this re-entrapment follows"
    )


class StepOut(BaseModel):
    """One step of an incident's history."""

    step: str
    at: datetime
    actor: str
    technician_id: int | None
    detail: dict[str, Any]


class DispatchOut(BaseModel):
    """One technician asked to go (rule R4)."""

    technician_id: int
    technician_name: str
    rank: int
    estimated_travel_s: float
    estimated_arrival: datetime
    dispatched_at: datetime
    accept_by: datetime
    outcome: str | None
    outcome_at: datetime | None


class IncidentDetail(IncidentOut):
    """An incident with its steps and dispatches."""

    steps: list[StepOut]
    dispatches: list[DispatchOut]


class ReportRequest(Strict):
    """An entrapment reported by phone or through the API (rule R1)."""

    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    note: str = Field(default="", max_length=2000)


class AcceptRequest(Strict):
    """Who accepts: default the calling technician, or the technician awaiting an answer."""

    technician_id: int | None = Field(default=None, ge=1, le=2**62)


class CheckInRequest(Strict):
    """Where the technician is, as measured by their device; near the site it proves arrival
    (rule R6). Leave the position out when none was measured: the arrival is then recorded as
    unproven, never as being at the site."""

    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    technician_id: int | None = Field(default=None, ge=1, le=2**62)

    @model_validator(mode="after")
    def _both_or_neither(self) -> CheckInRequest:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither")
        return self


class FalseAlarmRequest(Strict):
    """Why nobody was trapped."""

    reason: str = Field(min_length=1, max_length=2000)


class ReportOut(BaseModel):
    """The incident a report opened, or the open one it attached to (rule R1)."""

    created: bool
    incident: IncidentOut
