"""Types of maintenance compliance (rules M1-M11)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal

import pydantic.dataclasses
from pydantic import BaseModel, Field

from api.auth.models import Strict
from vigil.clock import Instant


class Tier(StrEnum):
    """Maintenance tiers (rule M2); each includes every lower tier's items."""

    HALF_MONTHLY = "half_monthly"
    QUARTERLY = "quarterly"
    SEMI_ANNUAL = "semi_annual"
    ANNUAL = "annual"

    @property
    def rank(self) -> int:
        """1 for half-monthly up to 4 for annual."""
        return TIERS.index(self) + 1


TIERS: tuple[Tier, ...] = (Tier.HALF_MONTHLY, Tier.QUARTERLY, Tier.SEMI_ANNUAL, Tier.ANNUAL)

# TSG T5002 annex A, traction lifts: items each tier adds to the ones below it (rule M2).
ANNEX_A_ITEMS: dict[Tier, int] = {
    Tier.HALF_MONTHLY: 31,
    Tier.QUARTERLY: 13,
    Tier.SEMI_ANNUAL: 15,
    Tier.ANNUAL: 17,
}
_PREFIX = {Tier.HALF_MONTHLY: "A1", Tier.QUARTERLY: "A2", Tier.SEMI_ANNUAL: "A3", Tier.ANNUAL: "A4"}


def tier_items(tier: Tier) -> list[str]:
    """Item codes a tier adds, e.g. ``A1.01`` .. ``A1.31`` for half-monthly."""
    return [f"{_PREFIX[tier]}.{n:02d}" for n in range(1, ANNEX_A_ITEMS[tier] + 1)]


def checklist(tier: Tier) -> list[str]:
    """Every item a visit of ``tier`` must do: its own and all lower tiers' (31/44/59/76)."""
    return [item for lower in TIERS[: tier.rank] for item in tier_items(lower)]


ALL_ITEMS: frozenset[str] = frozenset(checklist(Tier.ANNUAL))


class Verdict(StrEnum):
    """What the telemetry says about a maintenance record (rule M3)."""

    VERIFIED = "verified"
    NO_EVIDENCE = "no_evidence"
    TOO_SHORT = "too_short"
    NO_CAR_TOP_OR_PIT = "no_car_top_or_pit"
    DUPLICATE_VISIT = "duplicate_visit"
    OUTSIDE_WINDOW = "outside_window"


class EscalationState(StrEnum):
    """Self-monitoring escalation of one elevator (rules M5, M6)."""

    OK = "ok"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"
    LOCKOUT_PENDING = "lockout_pending"
    LOCKOUT_RECOMMENDED = "lockout_recommended"
    LOCKED_OUT = "locked_out"
    OVERRIDDEN = "overridden"


class PartChange(StrEnum):
    """How a part was changed (rule M9)."""

    REPAIR = "repair"
    REPLACEMENT = "replacement"
    MODIFICATION = "modification"


class RecordError(ValueError):
    """A maintenance record (or sign-off, drill, override) that cannot be accepted as given."""


@dataclass(frozen=True, slots=True)
class DueCommand:
    """A lockout or release command due for publication, claimed from the outbox (rule M6)."""

    command_id: str
    repeat_minutes: int | None
    device_id: str
    action: str
    reason: str | None
    gateway_id: str | None
    car_safe: bool | None  # what the platform itself sees of the car, not the device's word


@dataclass(frozen=True, slots=True)
class Part:
    """A part replaced or repaired during a visit."""

    component: str
    model: str
    change: PartChange = PartChange.REPLACEMENT
    safety: bool = False

    def as_json(self) -> dict[str, Any]:
        """JSON object stored with the record."""
        return {
            "component": self.component,
            "model": self.model,
            "change": str(self.change),
            "safety": self.safety,
        }


# class_row gives the database's text: pydantic makes the enums
@pydantic.dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """A saved maintenance record."""

    id: int
    device_id: str
    technician_id: int
    firm_id: int
    tier: Tier
    claimed_start: datetime
    claimed_end: datetime
    checklist_done: tuple[str, ...]
    checklist_total: int
    credited_tier: Tier | None
    parts: tuple[dict[str, Any], ...]
    notes: str
    corrects_id: int | None
    correction_reason: str | None
    recorded_by: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Interval:
    """An inspection-mode interval of a controller, with the events that bound it."""

    start: datetime
    end: datetime
    start_event_id: int | None
    end_event_id: int | None

    @property
    def minutes(self) -> float:
        """Length in minutes."""
        return (self.end - self.start).total_seconds() / 60


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict on one record and the evidence it rests on (rule M3)."""

    verdict: Verdict
    onsite_start: datetime | None
    onsite_end: datetime | None
    onsite_minutes: float
    evidence: dict[str, Any]
    rule_values: dict[str, Any]
    # rule M3: the whole inspection interval behind the verdict, not clipped to the claim
    span_start: datetime | None = None
    span_end: datetime | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Rule values in force for one elevator."""

    half_monthly_days: int
    quarterly_days: int
    semi_annual_days: int
    annual_days: int
    due_soon_days: int
    grace_hours: int
    min_onsite_minutes: int
    evidence_slack_hours: int
    drill_interval_days: int
    selftest_interval_hours: int
    qualification_warning_days: int
    lockout_retry_minutes: int
    lockout_mode: str
    override_hours: int = 24

    def interval_days(self, tier: Tier) -> int:
        """Days between visits of ``tier`` (rules M1, M2)."""
        return int(getattr(self, f"{tier.value}_days"))


@dataclass(frozen=True, slots=True)
class Transition:
    """One escalation state change the sweep made."""

    device_id: str
    state: EscalationState
    previous_state: EscalationState | None
    detail: dict[str, Any]
    lockout_command_id: str | None = None
    release_command_id: str | None = None


@dataclass(frozen=True, slots=True)
class Technician:
    """A technician qualified on a given day (rule M10)."""

    id: int
    firm_id: int
    name: str
    certificate_no: str
    certificate_expires_on: date
    home_latitude: float | None
    home_longitude: float | None


@dataclass(slots=True)
class SweepResult:
    """What one sweep did."""

    elevators: int = 0
    transitions: list[Transition] = field(default_factory=list)
    verdicts: int = 0
    findings_opened: int = 0
    findings_closed: int = 0
    skipped: bool = False
    examined: int | None = None  # elevators an incremental sweep looked at (None: all)
    # transitions a full check found that the incremental sweeps would not have looked for
    missed: list[str] = field(default_factory=list)

    def add(self, other: SweepResult) -> None:
        """Count another shard's sweep in this one."""
        self.elevators += other.elevators
        self.transitions += other.transitions
        self.verdicts += other.verdicts
        self.findings_opened += other.findings_opened
        self.findings_closed += other.findings_closed
        self.missed += other.missed
        if other.examined is not None:
            self.examined = (self.examined or 0) + other.examined


@dataclass(frozen=True, slots=True)
class ShardSweep:
    """When a shard of sites was last swept, and last fully (for which generation)."""

    swept_at: datetime
    full_swept_at: datetime
    full_generation: int


# -- what the maintenance API takes and sends (compliance.maintenance.views) -----------------

TierName = Literal["half_monthly", "quarterly", "semi_annual", "annual"]


class DueItem(BaseModel):
    """An elevator whose maintenance is due soon, overdue, or escalated (rules M1, M5, M6)."""

    device_id: str
    site_id: int
    site_name: str
    firm_id: int | None
    firm_name: str | None
    state: str
    since: datetime
    overdue_since: datetime | None = Field(description="first moment a tier is overdue")
    overdue_tiers: list[str]
    alarm_at: datetime | None
    lockout_command_id: str | None


class VerdictOut(BaseModel):
    """What the telemetry says about a record (rule M3)."""

    id: int
    verdict: str
    onsite_start: datetime | None
    onsite_end: datetime | None
    onsite_minutes: float
    evidence: dict[str, Any]
    rule_values: dict[str, Any]
    decided_at: datetime


class RecordOut(BaseModel):
    """A maintenance record (immutable, rule M4), its verdict in force and its sign-off."""

    id: int
    device_id: str
    technician_id: int
    technician_name: str
    firm_id: int
    tier: str
    claimed_start: datetime
    claimed_end: datetime
    checklist_done: list[str]
    checklist_total: int
    credited_tier: str | None
    parts: list[dict[str, Any]]
    notes: str
    corrects_id: int | None
    correction_reason: str | None
    corrected_by_id: int | None = Field(description="the record that corrects this one, if any")
    recorded_by: str
    recorded_at: datetime
    verdict: str | None = Field(description="latest verdict; null while not judged yet")
    verdict_at: datetime | None
    signed_off_by: str | None
    signed_off_at: datetime | None


class RecordDetail(RecordOut):
    """A record with every verdict it received, oldest first."""

    verdicts: list[VerdictOut]


class PartIn(Strict):
    """A part replaced, repaired or modified during the visit (rule M9)."""

    component: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    model: str = Field(min_length=1, max_length=200)
    change: Literal["repair", "replacement", "modification"] = "replacement"
    safety: bool = False


class RecordCreate(Strict):
    """A maintenance visit as the technician reports it."""

    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    technician_id: int | None = Field(
        default=None, ge=1, le=2**62, description="default: the calling technician"
    )
    tier: TierName
    claimed_start: Instant
    claimed_end: Instant
    checklist_done: list[str] = Field(max_length=200)
    parts: list[PartIn] = Field(default_factory=list, max_length=50)
    notes: str = Field(default="", max_length=5000)


class RecordCorrection(Strict):
    """A correction: a new record that references the one it corrects (rule M4)."""

    reason: str = Field(min_length=1, max_length=2000)
    technician_id: int | None = Field(default=None, ge=1, le=2**62)
    tier: TierName
    claimed_start: Instant
    claimed_end: Instant
    checklist_done: list[str] = Field(max_length=200)
    parts: list[PartIn] = Field(default_factory=list, max_length=50)
    notes: str = Field(default="", max_length=5000)


class OverrideRequest(Strict):
    """Why a lockout is lifted without verified maintenance (rule M6)."""

    reason: str = Field(min_length=1, max_length=2000)


class OverrideOut(BaseModel):
    """The override's outcome."""

    device_id: str
    state: str
    release_command_id: str | None
