"""Decisions: which conditions hold, and raising or clearing their alarms."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

from alerts import service as alerts
from compliance.conditions import service
from compliance.conditions.models import (
    LAMP_FAILURE,
    MAST_RELAMPING,
    REVERSE_ENERGY,
    REVERSE_FLOW,
    VOLTAGE_OUT_OF_BAND,
    Finding,
    Thresholds,
)
from compliance.log import service as compliance_log

AUDIENCE = ("firm", "user_unit")
SOURCE_TYPE = "device"


def judge(row: dict[str, Any], *, thresholds: Thresholds) -> list[Finding]:
    """The conditions that apply to one device's latest readings, holding or not."""
    device = row["device_id"]
    if row["kind"] == "energy_meter":
        return _meter_findings(device, row, thresholds=thresholds)
    if row["kind"] == "water_meter":
        if row["flow_rate"] is None:
            return []
        # rule E2: water flowing backwards through the meter
        return [
            Finding(device, REVERSE_FLOW, row["flow_rate"] < 0, {"flow_rate": row["flow_rate"]})
        ]
    findings = []
    if row["lamp_on"] is not None and row["lamp_power"] is not None:
        # rule L1: lit by schedule or photocell, yet drawing (almost) nothing
        failed = row["lamp_on"] >= 1 and row["lamp_power"] < thresholds.lamp_failed_below_w
        if row["kind"] == "high_mast" and row["lamps_out"] is not None:
            failed = failed or row["lamps_out"] >= 1
        readings = {k: row[k] for k in ("lamp_on", "lamp_power", "lamps_out")}
        findings.append(Finding(device, LAMP_FAILURE, failed, readings))
    if row["kind"] == "high_mast" and row["lamps_total"] and row["lamps_out"] is not None:
        share = row["lamps_out"] / row["lamps_total"]
        readings = {"lamps_out": row["lamps_out"], "lamps_total": row["lamps_total"]}
        # rule L2: 40% or more of a mast's lamps out opens a relamping order
        findings.append(Finding(device, MAST_RELAMPING, share >= thresholds.relamp_share, readings))
    return findings


def _meter_findings(device: str, row: dict[str, Any], *, thresholds: Thresholds) -> list[Finding]:
    findings = []
    voltages = [row[k] for k in ("voltage_l1", "voltage_l2", "voltage_l3") if row[k] is not None]
    if voltages:
        band = thresholds.nominal_voltage * thresholds.voltage_band
        worst = max(abs(v - thresholds.nominal_voltage) for v in voltages)
        readings = {k: row[k] for k in ("voltage_l1", "voltage_l2", "voltage_l3")}
        findings.append(Finding(device, VOLTAGE_OUT_OF_BAND, worst > band, readings))
    if row["power_total"] is not None:
        findings.append(
            Finding(
                device, REVERSE_ENERGY, row["power_total"] < 0, {"power_total": row["power_total"]}
            )
        )
    return findings


def check(
    conn: psycopg.Connection,
    *,
    now: datetime,
    thresholds: Thresholds,
    devices: list[str] | None = None,
) -> list[Finding]:
    """Raise an alarm for every condition that newly holds and clear those that stopped."""
    findings = [
        finding
        for row in service.latest_readings(conn, devices=devices)
        for finding in judge(row, thresholds=thresholds)
    ]
    changed = []
    with conn.transaction():
        for finding in findings:
            if _apply(conn, finding=finding, now=now, thresholds=thresholds):
                changed.append(finding)
    return changed


def _apply(
    conn: psycopg.Connection, *, finding: Finding, now: datetime, thresholds: Thresholds
) -> bool:
    condition = finding.condition
    open_alarm = alerts.open_alarm(
        conn, source_type=SOURCE_TYPE, source_id=finding.device_id, type=condition.type
    )
    if finding.holds == (open_alarm is not None):
        return False
    details = {
        "rule": condition.rule,
        "readings": finding.readings,
        "thresholds": _values(thresholds),
    }
    if finding.holds:
        alerts.raise_alarm(
            conn,
            source_type=SOURCE_TYPE,
            source_id=finding.device_id,
            type=condition.type,
            severity=condition.severity,
            message=f"{finding.device_id}: {condition.message}",
            audience=AUDIENCE,
            at=now,
            details=details,
        )
    else:
        alerts.clear_alarms_of(
            conn,
            source_type=SOURCE_TYPE,
            source_id=finding.device_id,
            type=condition.type,
            by="system",
            at=now,
            reason="condition no longer holds",
        )
    compliance_log.append(
        conn,
        kind=f"{condition.type}_{'raised' if finding.holds else 'cleared'}",
        subject_type=SOURCE_TYPE,
        subject_id=finding.device_id,
        body=details,
        actor="compliance.conditions",
        at=now,
    )
    return True


def _values(thresholds: Thresholds) -> dict[str, float]:
    return {
        "lamp_failed_below_w": thresholds.lamp_failed_below_w,
        "relamp_share": thresholds.relamp_share,
        "nominal_voltage": thresholds.nominal_voltage,
        "voltage_band": thresholds.voltage_band,
    }


def devices_of(notices: Iterable[Any]) -> list[str]:
    """Device ids named by state notices."""
    return sorted({device for notice in notices for device in getattr(notice, "devices", ())})
