"""Maintenance types of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.auth.models import Strict

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
    claimed_start: datetime
    claimed_end: datetime
    checklist_done: list[str] = Field(max_length=200)
    parts: list[PartIn] = Field(default_factory=list, max_length=50)
    notes: str = Field(default="", max_length=5000)


class RecordCorrection(Strict):
    """A correction: a new record that references the one it corrects (rule M4)."""

    reason: str = Field(min_length=1, max_length=2000)
    technician_id: int | None = Field(default=None, ge=1, le=2**62)
    tier: TierName
    claimed_start: datetime
    claimed_end: datetime
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
