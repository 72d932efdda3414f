"""Rule L4: the inspection rounds of street lighting, what each measures, and their records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

from vigil.clock import Instant


class RoundKind(StrEnum):
    """One kind of round (002:L41-46)."""

    PATROL = "patrol"  # a section walked or driven, 4 a week
    REMOTE_REVIEW = "remote_review"  # a section under telemetry reviewed from the control room
    POLE_BOX = "pole_box"  # the pole-head distribution box: body, door, switches, cables
    CLEANING = "cleaning"  # luminaires cleaned and terminals tightened
    GROUNDING = "grounding"  # earth resistance, ohm
    INSULATION = "insulation"  # low-voltage cable insulation, Mohm at the megger's voltage
    CALIBRATION = "calibration"  # the timer and the photocell


# A section's rounds are of the site; every other round is of one pole or mast.
SECTION_ROUNDS = frozenset({RoundKind.PATROL, RoundKind.REMOTE_REVIEW})
LIGHTING_KINDS = ("light_pole", "high_mast")

# Each device round and the policy value that says every how many days it falls due.
DEVICE_ROUND_INTERVALS: dict[RoundKind, str] = {
    RoundKind.POLE_BOX: "pole_box_days",
    RoundKind.CLEANING: "cleaning_days",
    RoundKind.GROUNDING: "grounding_days",
    RoundKind.INSULATION: "insulation_days",
    RoundKind.CALIBRATION: "calibration_days",
}
# The rounds whose verdict the platform draws from a measured value, and its unit.
MEASURED_UNITS: dict[RoundKind, str] = {RoundKind.GROUNDING: "ohm", RoundKind.INSULATION: "Mohm"}

# Alarm types: a device's round overdue (opens an inspection task) and a round failed (opens
# corrective work); each is of one kind, e.g. ``inspection_failed.grounding``.
MISSED_ALARM = "inspection_missed"
FAILED_ALARM = "inspection_failed"


def alarm_type(prefix: str, kind: RoundKind) -> str:
    """The alarm type of one kind of round."""
    return f"{prefix}.{kind.value}"


class RoundError(ValueError):
    """A round the rules refuse; the message says why."""


@dataclass(frozen=True)
class Round:
    """One round done, with the limits it was judged by."""

    id: int
    kind: RoundKind
    site_id: int
    device_id: str | None
    performed_at: datetime
    recorded_at: datetime
    recorded_by: str
    technician_id: int | None
    measured: float | None
    unit: str | None
    test_voltage_v: float | None
    passed: bool
    limits: dict[str, Any]
    note: str


@dataclass(frozen=True)
class MissedRound:
    """A round not done in time: a finding (rule L4)."""

    id: int
    kind: RoundKind
    site_id: int
    device_id: str | None
    period_start: datetime
    due_by: datetime
    required: int
    done: int
    detected_at: datetime
    policy: dict[str, Any]
    resolved_at: datetime | None
    resolved_by: int | None


@dataclass(frozen=True)
class DueRound:
    """When a device's next round of one kind falls due."""

    device_id: str
    site_id: int
    kind: RoundKind
    last_done: datetime | None
    due_by: datetime
    overdue: bool


class RoundCreate(BaseModel):
    """A round to record: of a section (``site_id``) or of a pole or mast (``device_id``)."""

    model_config = ConfigDict(extra="forbid")

    kind: RoundKind
    site_id: int | None = Field(default=None, ge=1, le=2**62)
    device_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    performed_at: Instant | None = Field(default=None, description="default: now")
    technician_id: int | None = Field(default=None, ge=1, le=2**62)
    measured: float | None = Field(
        default=None, ge=0, le=1e9, description="grounding in ohm, insulation in Mohm"
    )
    test_voltage_v: float | None = Field(default=None, gt=0, le=1e5)
    passed: bool | None = Field(
        default=None,
        description="the technician's verdict (judged by the platform for "
        "grounding and insulation); default: passed",
    )
    note: str = Field(default="", max_length=2000)
