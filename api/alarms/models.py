"""Alarm types of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.auth.models import Strict


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
