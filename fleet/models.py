"""The registry's records, as a file or an API call names them, and how each kind is stored.

A record names what it refers to by natural key (a site by its code, a firm by its name, a
technician by certificate number), never by a database id, so that the same record can be
imported on any installation. ``KINDS`` says, for each kind, its table, its natural key and which
fields refer to other kinds; the service builds every statement from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import available_timezones

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from vigil.catalog import DeviceKind
from vigil.clock import Instant
from vigil.wire import ID_PATTERN

TopicId = Annotated[str, Field(pattern=ID_PATTERN.pattern)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
Tier = Literal["city", "elsewhere"]
_TIMEZONES = frozenset(available_timezones())


def _blank_is_none(value: Any) -> Any:
    """An empty CSV cell is an absent value."""
    return None if isinstance(value, str) and value.strip() == "" else value


def _split_list(value: Any) -> Any:
    """``a;b;c`` in a CSV cell is a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if part.strip()]
    return value


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    return value


def problem_place(error: dict[str, Any]) -> tuple[str | None, str]:
    """The column and reason of one pydantic error of a record (a record-wide check names its
    column first: ``"ends_on: ends_on is before starts_on"``)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["loc"]:
        return str(error["loc"][0]), message
    column, _, reason = message.partition(": ")
    return (column, reason) if reason else (None, message)


class FleetRecord(BaseModel):
    """Base of every record: unknown fields are errors, empty cells are absent values."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _blanks(cls, data: Any) -> Any:
        # an empty cell is an absent value: the field's default applies
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if _blank_is_none(v) is not None}
        return data


class Jurisdiction(FleetRecord):
    """A special-equipment safety authority's area, with its rescue, lockout and maintenance
    policies (rules R1, R2, R4, R5, M6; maintenance values override RULES.md's defaults)."""

    code: TopicId
    name: Text
    default_tier: Tier = "city"
    rescue_minutes_city: int = Field(default=30, gt=0)  # rule R2
    rescue_minutes_elsewhere: int = Field(default=60, gt=0)
    rescue_clock_from: Literal["report", "dispatch"] = "report"
    lockout_mode: Literal["enforce", "recommend"] = "enforce"  # rule M6
    rescue_dwell_outside_door_zone_s: int = Field(default=30, gt=0)  # rule R1
    rescue_dwell_at_floor_s: int = Field(default=120, gt=0)
    rescue_accept_timeout_s: int = Field(default=120, gt=0)  # rule R4
    rescue_fire_service_after_s: int = Field(default=600, ge=0)  # rule R5
    # maintenance policy (compliance_policies of the jurisdiction); absent: the default
    half_monthly_days: int | None = Field(default=None, gt=0)  # rule M1
    due_soon_days: int | None = Field(default=None, ge=0)  # rule M5
    grace_hours: int | None = Field(default=None, ge=0)  # rule M6
    min_onsite_minutes: int | None = Field(default=None, gt=0)  # rule M3


class UserUnit(FleetRecord):
    """A building owner or operator (使用单位)."""

    name: Text


class SafetyManager(FleetRecord):
    """A user unit's safety manager (安全管理员), optionally for one of its sites."""

    certificate_no: Text
    user_unit: Text
    name: Text
    phone: str | None = None
    certificate_expires_on: date | None = None
    site: TopicId | None = None


class Site(FleetRecord):
    """A building or street section: where devices are, in which zone and time zone."""

    code: TopicId
    user_unit: Text
    jurisdiction: TopicId
    name: Text
    address: str = ""
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    tier: Tier  # rule R2: city 30 minutes, elsewhere 1 hour
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in _TIMEZONES:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)")
        return value


class Firm(FleetRecord):
    """A licensed maintenance firm (维保单位); rule M10 reads its licence."""

    name: Text
    licence_no: Text
    licence_expires_on: date
    duty_phone: str | None = None


class Technician(FleetRecord):
    """A qualified employee of a firm; rule M10 reads the certificate."""

    certificate_no: Text
    firm: Text
    name: Text
    phone: str | None = None
    certificate_expires_on: date
    home_latitude: float | None = Field(default=None, ge=-90, le=90)
    home_longitude: float | None = Field(default=None, ge=-180, le=180)
    qualifications: Annotated[list[Text], BeforeValidator(_split_list)] = []
    active: bool = True

    @model_validator(mode="after")
    def _home_complete(self) -> Technician:
        if (self.home_latitude is None) != (self.home_longitude is None):
            raise ValueError("home_longitude: home_latitude and home_longitude go together")
        return self


class Manufacturer(FleetRecord):
    """Who built a lift (rule M7: it receives the lift's self-monitoring alarms)."""

    name: Text


class Gateway(FleetRecord):
    """An edge gateway: it polls the devices registered behind it."""

    id: TopicId
    site: TopicId | None = None
    name: str = ""


class Device(FleetRecord):
    """An elevator, meter or pole. A lift carries the statutory facts a regulator tracks."""

    id: TopicId
    kind: DeviceKind
    model: Text  # a built-in profile name (vigil/profiles) or the model of a smart pole
    site: TopicId
    manufacturer: Text | None = None
    gateway: TopicId | None = None
    modbus_host: str | None = None
    modbus_port: int | None = Field(default=None, ge=1, le=65535)
    modbus_unit: int | None = Field(default=None, ge=0, le=255)
    serial_no: str | None = None
    registered_at: Instant | None = None  # default: now
    registration_code: str | None = None  # 使用登记证
    next_inspection_due: date | None = None  # 定期检验

    @model_validator(mode="after")
    def _address(self) -> Device:
        if self.modbus_host is not None and self.modbus_port is None:
            self.modbus_port = 502
        if self.modbus_host is not None and self.modbus_unit is None:
            self.modbus_unit = 1
        if self.modbus_host is None and (self.modbus_port, self.modbus_unit) != (None, None):
            raise ValueError("modbus_host: modbus_port and modbus_unit need a modbus_host")
        if self.modbus_host is not None and self.gateway is None:
            raise ValueError("gateway: a device with a Modbus address needs its gateway")
        return self


class Component(FleetRecord):
    """The certified model of one safety component of a lift (rule M9)."""

    device: TopicId
    component: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    model: Text


class Contract(FleetRecord):
    """A maintenance contract for one device: its firm, its days (through ``ends_on``), its
    terms (the service-level profile of rule S1 and anything else the parties agreed)."""

    device: TopicId
    firm: Text
    starts_on: date
    ends_on: date
    terms: Annotated[dict[str, Any], BeforeValidator(_json_object)] = {}

    @model_validator(mode="after")
    def _ordered(self) -> Contract:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on: ends_on is before starts_on")
        return self


class Assignment(FleetRecord):
    """A technician assigned to a device: what the technician sees (rule A2)."""

    technician: Text  # certificate number
    device: TopicId


@dataclass(frozen=True, slots=True)
class Ref:
    """A field naming a row of another kind, stored as that row's id in ``column``."""

    kind: str
    column: str


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of record is stored."""

    name: str  # file stem and URL segment
    table: str
    record: type[FleetRecord]
    key: tuple[str, ...]  # natural-key fields
    refs: dict[str, Ref] = field(default_factory=dict)
    # field -> column where they differ; fields not stored in the table are listed in ``extra``
    extra: tuple[str, ...] = ()  # fields stored outside the kind's table
    retired_column: str | None = "retired_at"

    def column(self, name: str) -> str:
        """The table column a field is stored in."""
        ref = self.refs.get(name)
        return ref.column if ref else name

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field of the record, in file column order."""
        return tuple(self.record.model_fields)

    @property
    def stored(self) -> tuple[str, ...]:
        """The fields stored in the kind's own table."""
        return tuple(f for f in self.fields if f not in self.extra)


POLICY_FIELDS = ("half_monthly_days", "due_soon_days", "grace_hours", "min_onsite_minutes")

# Dependency order: a kind refers only to kinds before it.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("jurisdictions", "jurisdictions", Jurisdiction, ("code",), extra=POLICY_FIELDS),
        Kind("user_units", "user_units", UserUnit, ("name",)),
        Kind(
            "sites",
            "sites",
            Site,
            ("code",),
            refs={
                "user_unit": Ref("user_units", "user_unit_id"),
                "jurisdiction": Ref("jurisdictions", "jurisdiction_id"),
            },
        ),
        Kind(
            "safety_managers",
            "safety_managers",
            SafetyManager,
            ("certificate_no",),
            refs={"user_unit": Ref("user_units", "user_unit_id"), "site": Ref("sites", "site_id")},
        ),
        Kind("firms", "maintenance_firms", Firm, ("name",)),
        Kind(
            "technicians",
            "technicians",
            Technician,
            ("certificate_no",),
            refs={"firm": Ref("firms", "firm_id")},
        ),
        Kind("manufacturers", "manufacturers", Manufacturer, ("name",)),
        Kind("gateways", "gateways", Gateway, ("id",), refs={"site": Ref("sites", "site_id")}),
        Kind(
            "devices",
            "devices",
            Device,
            ("id",),
            refs={
                "site": Ref("sites", "site_id"),
                "manufacturer": Ref("manufacturers", "manufacturer_id"),
                "gateway": Ref("gateways", "gateway_id"),
            },
            retired_column="decommissioned_at",
        ),
        Kind(
            "components",
            "certified_components",
            Component,
            ("device", "component"),
            refs={"device": Ref("devices", "device_id")},
            retired_column=None,
        ),
        Kind(
            "assignments",
            "technician_assignments",
            Assignment,
            ("technician", "device"),
            refs={
                "technician": Ref("technicians", "technician_id"),
                "device": Ref("devices", "device_id"),
            },
            retired_column=None,
        ),
        Kind(
            "contracts",
            "contracts",
            Contract,
            ("device", "starts_on"),
            refs={"device": Ref("devices", "device_id"), "firm": Ref("firms", "firm_id")},
            retired_column=None,
        ),
    )
}


class Action(StrEnum):
    """What a caller does to the registry."""

    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    RETIRE = "retire"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a record: where (file, row, column) and why."""

    reason: str
    column: str | None = None
    row: int | None = None  # the file's line number (the header is line 1)
    source: str | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.source, self.row) if p is not None)
        column = f"column {self.column!r}: " if self.column else ""
        return f"{where}: {column}{self.reason}" if where else f"{column}{self.reason}"


class FleetError(ValueError):
    """A write the registry refuses, with every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(shown + more)


class NotFound(LookupError):
    """No such record (or none the caller may see)."""


@dataclass
class WriteResult:
    """What a write did, per natural key."""

    created: list[tuple[Any, ...]] = field(default_factory=list)
    updated: list[tuple[Any, ...]] = field(default_factory=list)
    unchanged: int = 0
    ids: dict[tuple[Any, ...], Any] = field(default_factory=dict)  # natural key -> row id

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.ids.update(other.ids)
        return self


class Viewer(Protocol):
    """Who reads or writes the registry, and the party their role is scoped to (rule A2); the
    API's principal is one."""

    @property
    def role(self) -> str: ...
    @property
    def firm_id(self) -> int | None: ...
    @property
    def technician_id(self) -> int | None: ...
    @property
    def user_unit_id(self) -> int | None: ...
    @property
    def manufacturer_id(self) -> int | None: ...
    @property
    def jurisdiction_id(self) -> int | None: ...


# -- the monitored asset: a device with its live state (the console's fleet grid, /assets) ---


class Condition(StrEnum):
    """What the fleet grid colours an asset by."""

    OK = "ok"
    INSPECTION = "inspection"  # controller in inspection mode (maintenance on site)
    FAULT = "fault"
    ALARM = "alarm"  # alarm button or trapped-passenger code
    LOCKED_OUT = "locked_out"  # out of service by lockout (rule M6)
    OUT_OF_SERVICE = "out_of_service"
    UNKNOWN = "unknown"  # nothing reported yet


class Status(StrEnum):
    """The worst open condition of an asset, worst first: what its tile's colour says."""

    ENTRAPMENT = "entrapment"  # an open rescue incident, or the alarm button / trapped code
    FAULT = "fault"
    ALARM = "alarm"  # an open alarm, such as a lamp failure (L1) or a meter's (E1-E4)
    LOCKED_OUT = "locked_out"  # rule M6
    LOCKOUT_PENDING = "lockout_pending"
    OVERDUE = "overdue"  # rules M1, M5
    OFFLINE = "offline"  # its gateway is offline, or it never reported
    INSPECTION = "inspection"
    OUT_OF_SERVICE = "out_of_service"
    DUE_SOON = "due_soon"
    OK = "ok"


class OpenAlarm(BaseModel):
    """The worst open alarm of an asset."""

    severity: str
    type: str


class StateValue(BaseModel):
    """The latest value of one metric."""

    value: float
    ts: datetime
    good: bool


class Asset(BaseModel):
    """A device with its site, firm and live state."""

    id: str
    kind: str
    model: str
    serial_no: str | None
    site_id: int
    site_name: str
    site_tier: str
    jurisdiction_id: int
    user_unit_id: int
    latitude: float
    longitude: float
    firm_id: int | None
    firm_name: str | None
    manufacturer_id: int | None
    gateway_id: str | None
    decommissioned_at: datetime | None
    registration_code: str | None = Field(default=None, description="使用登记证")
    next_inspection_due: date | None = Field(default=None, description="定期检验 (rule M12)")
    inspection: str | None = Field(
        default=None, description="inspection_due or inspection_lapsed while a finding is open"
    )
    condition: Condition
    status: Status = Field(description="the worst open condition, for the tile's colour")
    timezone: str = Field(description="the site's time zone: times are shown in it")
    escalation: str | None = Field(description="maintenance escalation state (rules M5, M6)")
    alarm: OpenAlarm | None = Field(description="the worst open alarm besides maintenance's")
    last_seen: datetime | None = Field(description="device time of the newest state value")
    state: dict[str, StateValue]


class AssetPage(BaseModel):
    """A page of assets."""

    total: int
    items: list[Asset]


class Event(BaseModel):
    """A state transition seen at the edge."""

    id: int
    device_id: str
    metric: str
    ts: datetime
    value: float | None
    previous: float | None


class TelemetryBucket(BaseModel):
    """Aggregates of one metric over one time bucket."""

    ts: datetime = Field(description="start of the bucket")
    avg: float
    min: float
    max: float
    last: float
    count: int


class TelemetrySeries(BaseModel):
    """A metric over a time range, bucketed with ``date_bin``."""

    device_id: str
    metric: str
    unit: str
    start: datetime
    end: datetime
    bucket_s: int
    buckets: list[TelemetryBucket]
