"""Types of the alerts package: alarms, audiences, escalation policies, rosters, deliveries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import pydantic.dataclasses
from pydantic import BaseModel, Field

from api.auth.models import Strict


class Severity(StrEnum):
    """How urgent an alarm is."""

    INFO = "info"
    WARNING = "warning"
    MAJOR = "major"
    CRITICAL = "critical"


class AlarmState(StrEnum):
    """Alarm lifecycle: active → acknowledged → cleared (a re-trigger makes it active again)."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class Audience(StrEnum):
    """Who an alarm or an escalation level is for; resolved to parties from the alarm's source."""

    FIRM = "firm"  # the contracted firm's duty line
    DUTY_MANAGER = "duty_manager"
    FIRM_MANAGER = "firm_manager"
    TECHNICIAN = "technician"
    USER_UNIT = "user_unit"  # the user unit's safety manager
    PROPERTY_MANAGEMENT = "property_management"
    MANUFACTURER = "manufacturer"
    REGULATOR = "regulator"
    FIRE_SERVICE = "fire_service"
    PLATFORM = "platform"
    SUPERVISOR = "supervisor"  # rule S2: the firm's supervisor, between technician and manager
    LEADERSHIP = "leadership"  # rule S2: the firm's leadership, the last level


class PartyType(StrEnum):
    """Who owns a contact."""

    FIRM = "firm"
    USER_UNIT = "user_unit"
    MANUFACTURER = "manufacturer"
    TECHNICIAN = "technician"
    JURISDICTION = "jurisdiction"
    PLATFORM = "platform"


class ChannelKind(StrEnum):
    """How a message reaches an address."""

    WEBHOOK = "webhook"
    EMAIL = "email"
    MQTT = "mqtt"
    CONSOLE = "console"


class DeliveryStatus(StrEnum):
    """Outcome of one delivery so far."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class AlarmError(Exception):
    """Base class of alarm lifecycle errors."""


class AlarmNotFound(AlarmError):
    """No alarm has this id."""


class AlarmStateError(AlarmError):
    """The alarm cannot make this change from its current state."""


# class_row gives the database's text: pydantic makes the enums
@pydantic.dataclasses.dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm row."""

    id: int
    source_type: str
    source_id: str
    type: str
    severity: Severity
    message: str
    audience: tuple[Audience, ...]
    details: dict[str, Any]
    state: AlarmState
    policy_id: int | None
    raised_at: datetime
    last_triggered_at: datetime
    trigger_count: int
    escalation_run: int
    escalation_started_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    cleared_by: str | None

    @property
    def open(self) -> bool:
        """True while the alarm is active or acknowledged."""
        return self.state is not AlarmState.CLEARED


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """One entry of an alarm's history."""

    alarm_id: int
    change: str
    at: datetime
    actor: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EscalationLevel:
    """One level of a policy: who hears, and how long after the run started."""

    level: int
    after_s: int
    audience: tuple[Audience, ...]


@dataclass(frozen=True, slots=True)
class Firing:
    """An escalation level that fired."""

    alarm_id: int
    run: int
    level: int


@dataclass(frozen=True, slots=True)
class Contact:
    """Where a party hears about an audience."""

    id: int
    party_type: PartyType
    party_id: int | None
    audience: Audience
    channel: ChannelKind
    address: str
    active: bool


# class_row gives the database's text: pydantic makes the enums
@pydantic.dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one address, and how it went."""

    id: int
    alarm_id: int | None
    subject_type: str
    subject_id: str
    reason: str
    audience: Audience
    channel: ChannelKind
    address: str
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    finished_at: datetime | None
    last_error: str


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One attempt in the delivery log."""

    delivery_id: int
    attempt: int
    at: datetime
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a channel reports about one send."""

    ok: bool
    detail: str = ""
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class Shift:
    """A technician on call over a period (rule R3)."""

    id: int
    roster_id: int
    firm_id: int
    technician_id: int
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class RosterGap:
    """A period in which a firm has nobody on call (rule R3)."""

    firm_id: int
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed delivery is retried."""

    max_attempts: int = 5
    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict)


# Alarm types that only their source clears, never a person: an entrapment alarm clears when
# its incident closes (rule R6), so nobody can silence it while people may still be trapped.
ENTRAPMENT_ALARM = "entrapment"
CLEARED_BY_SOURCE = frozenset({ENTRAPMENT_ALARM})


# -- what the alarms API sends and takes (alerts.views) ---------------------------------------


class AlarmOut(BaseModel):
    """An alarm (lifecycle: active → acknowledged → cleared)."""

    id: int
    source_type: str
    source_id: str
    device_id: str | None = Field(description="the asset, when the source is a device")
    type: str
    severity: str
    message: str
    state: str
    details: dict[str, Any]
    raised_at: datetime
    last_triggered_at: datetime
    trigger_count: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    cleared_by: str | None


class AlarmChangeOut(BaseModel):
    """One step of an alarm's history."""

    change: str
    at: datetime
    actor: str
    detail: dict[str, Any]


class AlarmDetail(AlarmOut):
    """An alarm with its history."""

    history: list[AlarmChangeOut]


class ClearRequest(Strict):
    """Why an alarm is cleared."""

    reason: str = Field(default="", max_length=1000)
