"""Types of the work-order domain: kinds, levels, the lifecycle, service levels (rules S1-S6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.auth.models import Strict


class Kind(StrEnum):
    """What the work is."""

    FAULT_REPAIR = "fault_repair"
    EMERGENCY_REPAIR = "emergency_repair"
    LAMP_REPLACEMENT = "lamp_replacement"
    MAST_RELAMPING = "mast_relamping"
    METER_FAULT = "meter_fault"
    INSPECTION_TASK = "inspection_task"
    COMPLAINT_FOLLOW_UP = "complaint_follow_up"
    CORRECTIVE_WORK = "corrective_work"


class Level(IntEnum):
    """Rule S1: the four graded levels."""

    SEVERE = 1
    MAJOR = 2
    GENERAL = 3
    NON_FAULT = 4


class Origin(StrEnum):
    """What opened a work order: a decision of the platform, or a person."""

    ALARM = "alarm"
    RESCUE = "rescue"
    MAINTENANCE_VERDICT = "maintenance_verdict"
    PHONE = "phone"
    COMPLAINT = "complaint"
    PATROL = "patrol"
    CONSOLE = "console"


MANUAL_ORIGINS = frozenset({Origin.PHONE, Origin.COMPLAINT, Origin.PATROL, Origin.CONSOLE})


class Status(StrEnum):
    """Where a work order stands."""

    OPENED = "opened"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    ON_SITE = "on_site"
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELLED = "cancelled"


# a repeat of the same cause attaches to an order in one of these states
OPEN_STATUSES = frozenset({Status.OPENED, Status.ASSIGNED, Status.ACCEPTED, Status.ON_SITE})
FINAL_STATUSES = frozenset({Status.CLOSED, Status.CANCELLED})

# the steps each status may go to (cancelled from any state before the end)
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.OPENED: frozenset({Status.ASSIGNED, Status.CANCELLED}),
    Status.ASSIGNED: frozenset({Status.ASSIGNED, Status.ACCEPTED, Status.CANCELLED}),
    Status.ACCEPTED: frozenset({Status.ASSIGNED, Status.ON_SITE, Status.CANCELLED}),
    Status.ON_SITE: frozenset({Status.RESOLVED, Status.CANCELLED}),
    Status.RESOLVED: frozenset({Status.CLOSED}),
    Status.CLOSED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class Step(StrEnum):
    """An entry of a work order's history."""

    OPENED = "opened"
    REPEATED = "repeated"
    RESPONDED = "responded"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    ON_SITE = "on_site"
    RESOLVED = "resolved"
    CALLBACK = "callback"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    BREACH = "breach"
    ESCALATED = "escalated"
    NOTE = "note"


class Zone(StrEnum):
    """Rule S1: on-site deadlines differ in a city and in a province."""

    CITY = "city"
    PROVINCE = "province"


class Deadline(StrEnum):
    """The deadlines of rule S1 that can be breached."""

    RESPOND = "respond"
    ON_SITE = "on_site"
    RESTORE = "restore"


DEFAULT_PROFILE = "s1-default"  # elevators (rule S1)
GENERAL_PROFILE = "s6-general"  # street lighting and meters (rule S6)
REPEAT_WINDOW_DAYS = 30  # rule S5
CALLBACK_RETRY_H = 4  # rule S4: an unreached customer is called again after this long


class WorkOrderError(Exception):
    """A work order that cannot take the step asked for; the message says why."""


class WorkOrderNotFound(WorkOrderError):
    """No such work order (in the caller's scope)."""


@dataclass(frozen=True, slots=True)
class Targets:
    """Rule S1: the minutes allowed at one level (restore: none for a non-fault)."""

    respond_min: int
    escalate_after_min: int
    restore_min: int | None
    on_site_city_min: int
    on_site_province_min: int


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    """The targets in force for one work order and where they came from."""

    level: Level
    zone: Zone
    targets: Targets
    profiles: tuple[str, ...]  # the profiles that applied; the strictest value of each won

    def as_json(self) -> dict[str, Any]:
        """Recorded with the work order (the values in force drive its deadlines)."""
        return {
            "level": int(self.level),
            "zone": str(self.zone),
            "profiles": list(self.profiles),
            "respond_min": self.targets.respond_min,
            "escalate_after_min": self.targets.escalate_after_min,
            "restore_min": self.targets.restore_min,
            "on_site_min": (
                self.targets.on_site_city_min
                if self.zone is Zone.CITY
                else self.targets.on_site_province_min
            ),
        }


@dataclass(frozen=True, slots=True)
class Deadlines:
    """When each step of rule S1 is due, counted from opening."""

    respond_by: datetime
    escalate_at: datetime
    on_site_by: datetime
    restore_by: datetime | None


@dataclass(frozen=True, slots=True)
class Source:
    """What the platform saw that needs work: the work order it opens or repeats."""

    device_id: str
    kind: Kind
    cause: str
    level: Level
    origin: Origin
    source_ref: str | None
    title: str
    details: dict[str, Any]


class WorkOrder(BaseModel):
    """One work order row (class_row gives the database's text: pydantic makes the enums)."""

    model_config = ConfigDict(frozen=True)

    id: int
    device_id: str
    site_id: int
    firm_id: int | None
    kind: Kind
    cause: str
    level: Level = Field(description="rule S1: 1 severe, 2 major, 3 general, 4 non-fault")
    origin: Origin
    source_ref: str | None
    title: str
    status: Status
    zone: Zone
    service_level: dict[str, Any] = Field(description="the values in force and their profiles")
    opened_at: datetime
    respond_by: datetime
    escalate_at: datetime
    on_site_by: datetime
    restore_by: datetime | None
    technician_id: int | None
    responded_at: datetime | None
    on_site_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    repeats: int
    last_repeat_at: datetime | None
    repeat_of: int | None = Field(description="rule S5: the earlier order of the same fault")

    @property
    def open(self) -> bool:
        """True while the work is not done (a repeat attaches to it)."""
        return self.status in OPEN_STATUSES


@dataclass(frozen=True, slots=True)
class Callback:
    """One call back to the customer (rule S4)."""

    id: int
    work_order_id: int
    at: datetime
    actor: str
    reached: bool
    satisfaction: int | None
    note: str


@dataclass(frozen=True, slots=True)
class Opened:
    """The outcome of a source: the work order, and whether it is new or a repeat."""

    work_order: WorkOrder
    created: bool


# -- API ------------------------------------------------------------------------------------------


class WorkOrderOut(WorkOrder):
    """A work order with the deadlines it missed."""

    breaches: list[Deadline]


class CallbackDue(BaseModel):
    """Rule S4: a resolved work order whose customer has not been reached yet."""

    work_order_id: int
    device_id: str
    title: str
    resolved_at: datetime
    attempts: int = Field(description="calls that did not reach the customer")
    last_attempt_at: datetime | None
    due_at: datetime


class StepOut(BaseModel):
    """One entry of a work order's timeline."""

    step: Step
    at: datetime
    actor: str
    note: str
    details: dict[str, Any]


class WorkOrderDetail(WorkOrderOut):
    """A work order with its timeline, oldest first."""

    steps: list[StepOut]


class WorkOrderCreate(Strict):
    """Work opened by hand: a phone call, a complaint, a patrol, the console."""

    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    kind: Kind
    level: int = Field(ge=1, le=4, description="rule S1: 1 severe ... 4 non-fault")
    origin: Origin = Origin.CONSOLE
    title: str = Field(min_length=1, max_length=500)
    cause: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_.:-]{0,127}$",
        description="one open order per device and cause (default: the kind)",
    )
    note: str = Field(default="", max_length=5000)


class NoteIn(Strict):
    """A note that goes with a step."""

    note: str = Field(default="", max_length=5000)


class AssignIn(Strict):
    """Give the work to a qualified technician of the contracted firm (rule M10)."""

    technician_id: int = Field(ge=1, le=2**62)
    note: str = Field(default="", max_length=5000)


class CheckInIn(Strict):
    """The technician's measured position on site (never pre-filled)."""

    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    note: str = Field(default="", max_length=5000)


class CallbackIn(Strict):
    """Rule S4: the call back to the customer after the work is resolved."""

    reached: bool
    satisfaction: int | None = Field(default=None, ge=1, le=5, description="1 (poor) to 5")
    note: str = Field(default="", max_length=5000)


class CancelIn(Strict):
    """Why the work is not done."""

    reason: str = Field(min_length=1, max_length=2000)


# -- complaints (rules S3, S5) --------------------------------------------------------------------

ANSWER_WITHIN_H = 24  # rule S3: every request answered within 24 h
OUTCOME_WITHIN_WORKING_DAYS = 2  # rule S3: the outcome back within 2 working days


class ComplaintStatus(StrEnum):
    """Rule S5: register, analyse, agree a solution, close."""

    REGISTERED = "registered"
    ANALYSED = "analysed"
    SOLUTION_AGREED = "solution_agreed"
    CLOSED = "closed"


class ComplaintStep(StrEnum):
    """An entry of a complaint's history."""

    REGISTERED = "registered"
    ANSWERED = "answered"
    ANALYSED = "analysed"
    SOLUTION_AGREED = "solution_agreed"
    OUTCOME_SENT = "outcome_sent"
    CLOSED = "closed"
    BREACH = "breach"
    NOTE = "note"


class ComplaintDeadline(StrEnum):
    """The deadlines of rule S3."""

    ANSWER = "answer"
    OUTCOME = "outcome"


class Channel(StrEnum):
    """How a complaint came in."""

    PHONE = "phone"
    EMAIL = "email"
    VISIT = "visit"
    LETTER = "letter"
    WEB = "web"
    REGULATOR = "regulator"


class Party(StrEnum):
    """Who is responsible for what the complaint is about (rule S5)."""

    FIRM = "firm"
    USER_UNIT = "user_unit"
    MANUFACTURER = "manufacturer"
    THIRD_PARTY = "third_party"
    NONE = "none"


class Complaint(BaseModel):
    """One complaint row."""

    model_config = ConfigDict(frozen=True)

    id: int
    device_id: str
    site_id: int
    firm_id: int | None
    received_at: datetime
    channel: Channel
    complainant: str
    contact: str
    subject: str
    status: ComplaintStatus
    answer_by: datetime = Field(description="rule S3: 24 h after it came in")
    answered_at: datetime | None
    outcome_by: datetime = Field(description="rule S3: the end of the 2nd working day after")
    outcome_sent_at: datetime | None
    cause: str | None
    responsible_party: Party | None
    solution: str | None
    work_order_id: int | None = Field(description="the follow-up work, if the solution needs it")
    closed_at: datetime | None


class ComplaintOut(Complaint):
    """A complaint with the deadlines it missed."""

    breaches: list[ComplaintDeadline]


class ComplaintStepOut(BaseModel):
    """One entry of a complaint's timeline."""

    step: ComplaintStep
    at: datetime
    actor: str
    note: str
    details: dict[str, Any]


class ComplaintDetail(ComplaintOut):
    """A complaint with its timeline."""

    steps: list[ComplaintStepOut]


class ComplaintCreate(Strict):
    """A complaint as it comes in."""

    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    channel: Channel
    complainant: str = Field(min_length=1, max_length=200)
    contact: str = Field(default="", max_length=200)
    subject: str = Field(min_length=1, max_length=5000)


class AnalysisIn(Strict):
    """Rule S5: the cause and who is responsible."""

    cause: str = Field(min_length=1, max_length=2000)
    responsible_party: Party
    note: str = Field(default="", max_length=5000)


class SolutionIn(Strict):
    """Rule S5: the solution agreed, and whether it needs work on the asset."""

    solution: str = Field(min_length=1, max_length=5000)
    follow_up_level: int | None = Field(
        default=None, ge=1, le=4, description="open follow-up work at this S1 level"
    )


class WorkFigures(BaseModel):
    """Rule A4: a firm's work orders, complaints and callbacks in a month."""

    work_orders: int = 0
    work_orders_level_1: int = 0
    work_orders_level_2: int = 0
    work_orders_level_3: int = 0
    work_orders_level_4: int = 0
    work_orders_within_sla: float | None = Field(
        default=None, description="share of the month's work orders with no deadline missed (S1)"
    )
    repeat_faults: int = Field(default=0, description="rule S5: a fault again within 30 days")
    complaints: int = 0
    complaints_answered_in_time: float | None = Field(
        default=None, description="rule S3: share answered within 24 h"
    )
    complaints_outcome_in_time: float | None = Field(
        default=None, description="rule S3: share whose outcome went back within 2 working days"
    )
    callbacks_reached: int = Field(default=0, description="rule S4")
    callbacks_unreached: int = 0
    mean_satisfaction: float | None = Field(default=None, description="1 (poor) to 5")


class MonthlyWork(WorkFigures):
    """The figures of one firm (the report joins them by firm)."""

    firm_id: int


# -- configuration: service-level profiles and the working-day calendar ---------------------------


class TargetsIn(Strict):
    """Rule S1: the minutes allowed at one level."""

    respond_min: int = Field(ge=0, le=100_000)
    escalate_after_min: int = Field(ge=0, le=100_000)
    restore_min: int | None = Field(default=None, ge=1, le=100_000)
    on_site_city_min: int = Field(ge=1, le=100_000)
    on_site_province_min: int = Field(ge=1, le=100_000)


class ProfileIn(Strict):
    """A service-level profile a contract can name in ``terms.service_levels``."""

    name: str = Field(min_length=1, max_length=200)
    levels: dict[Level, TargetsIn] = Field(min_length=1, description="by level 1-4")


class ProfileOut(BaseModel):
    """A profile and its targets by level."""

    code: str
    name: str
    built_in: bool
    levels: dict[int, Targets]


class CalendarDayIn(Strict):
    """A holiday (not working) or a make-up working day (调休) of a jurisdiction."""

    working: bool
    name: str = Field(default="", max_length=200)


class CalendarDay(BaseModel):
    """One day that differs from Monday-to-Friday."""

    jurisdiction_id: int
    day: date
    working: bool
    name: str


class ComplaintReviewRow(BaseModel):
    """Rule S5: one complaint of the month under review."""

    id: int
    device_id: str
    site_id: int
    firm_id: int | None
    received_at: datetime
    channel: Channel
    subject: str
    cause: str | None
    responsible_party: Party | None
    status: ComplaintStatus
    answered_in_time: bool = Field(description="rule S3: answered within 24 h")
    outcome_in_time: bool = Field(description="rule S3: outcome back within 2 working days")
    work_order_id: int | None
    repeat_fault: bool = Field(
        description="rule S5: its asset had a repeat fault in the month (a fault again within "
        "30 days)"
    )
