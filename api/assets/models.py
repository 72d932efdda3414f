"""Asset, state, event and telemetry types of the API."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Condition(StrEnum):
    """What the fleet grid colours an asset by."""

    OK = "ok"
    INSPECTION = "inspection"  # controller in inspection mode (maintenance on site)
    FAULT = "fault"
    ALARM = "alarm"  # alarm button or trapped-passenger code
    LOCKED_OUT = "locked_out"  # out of service by lockout (rule M6)
    OUT_OF_SERVICE = "out_of_service"
    UNKNOWN = "unknown"  # nothing reported yet


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
