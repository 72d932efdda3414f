"""Types of rescue: lift state as detection sees it, incidents, steps, dispatch candidates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import pydantic.dataclasses
from pydantic import BaseModel, Field, model_validator

from api.auth.models import Strict


class Trigger(StrEnum):
    """What opened an incident (rule R1)."""

    ALARM_BUTTON = "alarm_button"
    STOPPED_OUTSIDE_DOOR_ZONE = "stopped_outside_door_zone"
    TRAPPED_AT_FLOOR = "trapped_at_floor"
    MANUAL = "manual"
    FAULT_CODE = "fault_code"  # GB/T 24476 codes 4 and 11


class Status(StrEnum):
    """Where an incident stands (rule R6)."""

    REPORTED = "reported"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    RELEASED = "released"
    CLOSED = "closed"
    FALSE_ALARM = "false_alarm"


class Step(StrEnum):
    """An entry of an incident's history (rule R6)."""

    REPORTED = "reported"
    SIGNAL = "signal"
    DISPATCHED = "dispatched"
    DISPATCH_TIMEOUT = "dispatch_timeout"
    ACCEPTED = "accepted"
    ESCALATED = "escalated"
    ARRIVED = "arrived"
    RELEASED = "released"
    CLOSED = "closed"
    FALSE_ALARM = "false_alarm"
    BREACH = "breach"


OPEN_STATUSES = frozenset(
    {Status.REPORTED, Status.DISPATCHED, Status.ACCEPTED, Status.ARRIVED, Status.RELEASED}
)

# Metrics detection reads, as the gateway names them (vigil.catalog).
DETECTION_METRICS = (
    "car_status",
    "door_zone",
    "door_state",
    "passengers",
    "alarm_button",
    "service_mode",
    "fault_code",
)


class RescueError(Exception):
    """A rescue action that cannot be taken; the message says why."""


class IncidentNotFound(RescueError):
    """No such incident."""


class UnknownTechnician(RescueError):
    """No such technician."""


class StillTrapped(RescueError):
    """Rule R6: the controller still reports people trapped; the step is refused."""


@dataclass(frozen=True, slots=True)
class LiftState:
    """The latest detection metrics of one elevator, and when each last changed."""

    device_id: str
    values: dict[str, float]
    changed_at: dict[str, datetime]
    # rule R1: the jurisdiction's dwell times in force for this lift
    dwell_outside_door_zone_s: float = 30.0
    dwell_at_floor_s: float = 120.0

    def value(self, metric: str) -> float | None:
        """Latest value of a metric, or None when never reported."""
        return self.values.get(metric)


@dataclass(frozen=True, slots=True)
class Condition:
    """A dwell condition that holds now, and since when (rule R1)."""

    trigger: Trigger
    since: datetime
    dwell_s: float


# class_row gives the database's text: pydantic makes the enums
@pydantic.dataclasses.dataclass(frozen=True, slots=True)
class Incident:
    """One rescue incident."""

    id: int
    device_id: str
    site_id: int
    firm_id: int | None
    jurisdiction_id: int
    trigger: Trigger
    tier: str
    deadline_minutes: int
    clock_from: str
    reported_at: datetime
    arrival_deadline: datetime | None
    status: Status
    alarm_id: int | None
    closed_at: datetime | None
    follows_incident_id: int | None = None  # the released incident this re-entrapment follows

    @property
    def open(self) -> bool:
        """True until closed or found a false alarm."""
        return self.closed_at is None


@dataclass(frozen=True, slots=True)
class IncidentStep:
    """One step of an incident's history."""

    incident_id: int
    step: Step
    at: datetime
    actor: str
    technician_id: int | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Opened:
    """Outcome of a signal: the incident, and whether this signal opened it."""

    incident: Incident
    created: bool


@dataclass(frozen=True, slots=True)
class CheckIn:
    """Outcome of a technician check-in: whether it proved arrival, and if not, why."""

    incident: Incident | None
    arrived: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Place:
    """A point on the map."""

    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """A qualified, on-call technician of the contracted firm, and where they are."""

    technician_id: int
    name: str
    location: Place


@dataclass(frozen=True, slots=True)
class Ranked:
    """A candidate with an estimated travel time."""

    candidate: Candidate
    travel_s: float


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One technician asked to go."""

    id: int
    incident_id: int
    technician_id: int
    rank: int
    estimated_travel_s: float
    estimated_arrival: datetime
    dispatched_at: datetime
    accept_by: datetime
    outcome: str | None
    outcome_at: datetime | None


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    """What one dispatch decision did."""

    dispatch: Dispatch | None
    escalated: bool
    reason: str = ""
    ranked: list[Ranked] = field(default_factory=list)


class TravelEstimator(Protocol):
    """Estimates travel time; pluggable (a routing service can replace the default)."""

    def travel_seconds(self, *, origin: Place, destination: Place, tier: str) -> float:
        """Seconds to travel from ``origin`` to ``destination`` at a site of ``tier``."""
        ...


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """Rule R8: one contracted elevator against its deadline."""

    device_id: str
    firm_id: int
    tier: str
    deadline_minutes: int
    nearest_point: str | None
    travel_minutes: float | None
    within_deadline: bool


@dataclass(frozen=True, slots=True)
class FirmLoad:
    """Rule R8: elevators per technician of a firm."""

    firm_id: int
    elevators: int
    technicians: int

    @property
    def elevators_per_technician(self) -> float | None:
        """Contracted elevators per active qualified technician."""
        return self.elevators / self.technicians if self.technicians else None


# -- what the incidents API takes and sends (compliance.rescue.views) -----------------------


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


class TechnicianPosition(BaseModel):
    """An on-call technician's last known position (rule R3), for the dispatch map."""

    technician_id: int
    name: str
    latitude: float
    longitude: float
    reported_at: datetime | None = Field(description="None: no report yet, the home base")


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
