"""Decisions: which conditions hold, and raising or clearing their alarms."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

from alerts import service as alerts
from compliance.conditions import service
from compliance.conditions.models import (
    COMMUNICATION_LOSS,
    CONSUMPTION_ANOMALY,
    COUNTER_INTEGRITY,
    LAMP_FAILURE,
    LAMP_POWER_OUT_OF_BAND,
    MAST_RELAMPING,
    REVERSE_ENERGY,
    REVERSE_FLOW,
    SUPPLY_VOLTAGE_OUT_OF_BAND,
    VOLTAGE_OUT_OF_BAND,
    Finding,
    InspectionPolicy,
    Thresholds,
    thresholds_of,
)
from compliance.log import service as compliance_log
from vigil.catalog import METRICS, MetricType
from vigil.clock import to_ms
from vigil.profiles import builtin_profile

AUDIENCE = ("firm", "user_unit")
SOURCE_TYPE = "device"


def should_be_lit(row: dict[str, Any], *, now: datetime, thresholds: Thresholds) -> bool:
    """Rule L1: by the pole's schedule (local hours, across midnight) when it has one, else by
    its photocell, else by its relay."""
    if thresholds.lit_from_h is not None and thresholds.lit_until_h is not None:
        local = now.astimezone(ZoneInfo(row["timezone"]))
        hour = local.hour + local.minute / 60 + local.second / 3600
        start, end = thresholds.lit_from_h, thresholds.lit_until_h
        return start <= hour < end if start < end else hour >= start or hour < end
    if row["lux"] is not None:
        return row["lux"] < thresholds.dark_below_lux
    return row["lamp_on"] >= 1


def judge(row: dict[str, Any], *, thresholds: Thresholds, now: datetime) -> list[Finding]:
    """The conditions that apply to one device's latest readings, holding or not, under the
    thresholds in force for it."""
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
        # rule L1: it should be lit (schedule or photocell), yet it draws (almost) nothing,
        # whatever its relay says
        lit = should_be_lit(row, now=now, thresholds=thresholds)
        failed = lit and row["lamp_power"] < thresholds.lamp_failed_below_w
        if row["kind"] == "high_mast" and row["lamps_out"] is not None:
            failed = failed or row["lamps_out"] >= 1
        readings = {k: row[k] for k in ("lamp_on", "lamp_power", "lamps_out", "lux")}
        findings.append(Finding(device, LAMP_FAILURE, failed, readings))
    if row["kind"] == "high_mast" and row["lamps_total"] and row["lamps_out"] is not None:
        share = row["lamps_out"] / row["lamps_total"]
        readings = {"lamps_out": row["lamps_out"], "lamps_total": row["lamps_total"]}
        # rule L2: 40% or more of a mast's lamps out opens a relamping order
        findings.append(Finding(device, MAST_RELAMPING, share >= thresholds.relamp_share, readings))
    return findings + _lamp_band_findings(device, row, thresholds=thresholds)


def _lamp_band_findings(
    device: str, row: dict[str, Any], *, thresholds: Thresholds
) -> list[Finding]:
    """Rule L5 (TALQ lampPowerTooHigh/Low, supplyVoltageTooHigh/Low)."""
    findings = []
    volts = row["supply_voltage"]
    if volts is not None:
        band = thresholds.nominal_voltage * thresholds.voltage_band
        out = abs(volts - thresholds.nominal_voltage) > band
        findings.append(Finding(device, SUPPLY_VOLTAGE_OUT_OF_BAND, out, {"supply_voltage": volts}))
    rated, dim, watts, lit = (
        thresholds.lamp_rated_w,
        row["dim_level"],
        row["lamp_power"],
        row["lamp_on"],
    )
    lamps: float | None = 1
    if row["kind"] == "high_mast":
        total, out_now = row["lamps_total"], row["lamps_out"]
        lamps = total - out_now if total is not None and out_now is not None else None
    if rated is not None and None not in (dim, watts, lit, lamps) and lit >= 1 and watts > 0:
        # a lamp drawing nothing is rule L1's lamp failure, not a power band
        expected = rated * dim / 100 * lamps
        out = abs(watts - expected) > thresholds.lamp_power_band * expected
        readings = {"lamp_power": watts, "dim_level": dim, "expected_w": expected}
        findings.append(Finding(device, LAMP_POWER_OUT_OF_BAND, out, readings))
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


def silence(row: dict[str, Any], *, now: datetime, thresholds: Thresholds) -> Finding:
    """Rule E1: a meter silent for ``missed_readings`` reading periods has lost communication
    (the gap stays a gap: nothing is filled in)."""
    silent_s = (now - row["last_reading"]).total_seconds()
    allowed_s = thresholds.reading_interval_s * thresholds.missed_readings
    readings = {
        "silent_s": round(silent_s, 3),
        "last_reading_ms": float(to_ms(row["last_reading"])),
    }
    return Finding(row["device_id"], COMMUNICATION_LOSS, silent_s > allowed_s, readings)


def check(
    conn: psycopg.Connection, *, now: datetime, devices: list[str] | None = None
) -> list[Finding]:
    """Raise an alarm for every condition that newly holds and clear those that stopped, each
    device under the thresholds in force for it (recorded with the alarm)."""
    judged = []
    for row in service.latest_readings(conn, devices=devices):
        thresholds = thresholds_of(row)
        judged += [(f, thresholds) for f in judge(row, thresholds=thresholds, now=now)]
    for row in service.meter_silence(conn, devices=devices):
        thresholds = thresholds_of(row)
        judged.append((silence(row, now=now, thresholds=thresholds), thresholds))
    changed = []
    with conn.transaction():
        for finding, thresholds in judged:
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
    return asdict(thresholds)


# Rule E4: every cumulative counter of the catalogue.
COUNTER_METRICS = sorted(
    {
        m.name
        for metrics in METRICS.values()
        for m in metrics.values()
        if m.type is MetricType.COUNTER
    }
)


def is_rollover(*, mark: float, value: float, top: float | None, share: float) -> bool:
    """A counter that wrapped past its register's declared maximum ``top``: it stood in the top
    ``share`` of the range and now stands in the bottom rest (rule E4)."""
    return top is not None and mark >= share * top and value <= (1 - share) * top


def check_counters(
    conn: psycopg.Connection, *, now: datetime, devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """Rule E4: a counter below its mark (and not a declared rollover) is a data-quality event in
    the compliance log and a counter-integrity alarm (kept until a person clears it); the reading
    becomes the new mark either way. Returns the drops."""
    drops: list[dict[str, Any]] = []
    with conn.transaction():
        for row in service.counter_readings(conn, metrics=COUNTER_METRICS, devices=devices):
            mark, value = row["mark"], row["value"]
            thresholds = thresholds_of(row)
            if mark is not None and value < mark:
                top = _register_max(row["model"], row["metric"])
                if not is_rollover(
                    mark=mark, value=value, top=top, share=thresholds.rollover_share
                ):
                    drop = {
                        "rule": "E4",
                        "metric": row["metric"],
                        "from": mark,
                        "to": value,
                        "from_ts": row["mark_ts"].isoformat(),
                        "to_ts": row["ts"].isoformat(),
                        "register_max": top,
                        "thresholds": _values(thresholds),
                    }
                    _counter_dropped(conn, device_id=row["device_id"], drop=drop, now=now)
                    drops.append({"device_id": row["device_id"], **drop})
            if mark is None or value != mark:
                service.set_mark(
                    conn,
                    device_id=row["device_id"],
                    metric=row["metric"],
                    value=value,
                    ts=row["ts"],
                )
    return drops


def _register_max(model: str, metric: str) -> float | None:
    """Where the counter's register in the device's built-in profile rolls over, if known."""
    try:
        return builtin_profile(model).register(metric).wraps_at
    except (KeyError, ValueError):
        return None


def _counter_dropped(
    conn: psycopg.Connection, *, device_id: str, drop: dict[str, Any], now: datetime
) -> None:
    compliance_log.append(
        conn,
        kind="data_quality.counter_drop",
        subject_type=SOURCE_TYPE,
        subject_id=device_id,
        body=drop,
        actor="compliance.conditions",
        at=now,
    )
    alerts.raise_alarm(
        conn,
        source_type=SOURCE_TYPE,
        source_id=device_id,
        type=COUNTER_INTEGRITY.type,
        severity=COUNTER_INTEGRITY.severity,
        message=f"{device_id}: {drop['metric']} went back from {drop['from']:g} to {drop['to']:g}",
        audience=AUDIENCE,
        at=now,
        details=drop,
    )


def devices_of(notices: Iterable[Any]) -> list[str]:
    """Device ids named by state notices."""
    return sorted({device for notice in notices for device in getattr(notice, "devices", ())})


# -- rule E3: consumption anomaly ------------------------------------------------------------------

MAD_TO_SIGMA = 0.6745  # the robust z-score's constant: 0.6745 (x - median) / MAD


def robust_z(history: np.ndarray, value: float) -> float:
    """How far ``value`` lies from ``history`` in median absolute deviations (rule E3). A flat
    history (MAD 0) makes any other value infinitely far, and its own value 0."""
    median = float(np.median(history))
    mad = float(np.median(np.abs(history - median)))
    if mad == 0:
        return 0.0 if value == median else float("inf")
    return MAD_TO_SIGMA * (value - median) / mad


def check_consumption(
    conn: psycopg.Connection, *, now: datetime, devices: list[str] | None = None
) -> list[Finding]:
    """Rule E3: judge each meter's last complete hour against its own history (robust z-score,
    the policy's threshold), once it has the minimum history; raise or clear the alarm."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    rows = service.hourly_consumption(conn, until=hour, devices=devices)
    by_meter: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_meter.setdefault(row["device_id"], []).append(row)
    judged = []
    for device_id, hours in by_meter.items():
        thresholds = thresholds_of(hours[-1])
        last = hours[-1]
        if last["bucket"] != hour - timedelta(hours=1):
            continue  # the last hour has no reading: rule E1's, not a consumption to judge
        history = np.array([h["consumption"] for h in hours[:-1]], dtype=float)
        if len(history) < thresholds.anomaly_min_hours:
            continue  # too little history to know what is normal for this meter
        z = robust_z(history, float(last["consumption"]))
        readings = {
            "consumption": float(last["consumption"]),
            "median": float(np.median(history)),
            "z": round(z, 3) if np.isfinite(z) else None,
            "hours": float(len(history)),
        }
        holds = bool(abs(z) > thresholds.anomaly_z)
        judged.append((Finding(device_id, CONSUMPTION_ANOMALY, holds, readings), thresholds))
    changed = []
    with conn.transaction():
        for finding, thresholds in judged:
            if _apply(conn, finding=finding, now=now, thresholds=thresholds):
                changed.append(finding)
    return changed


# -- policy ---------------------------------------------------------------------------------------

INTEGER_POLICY_VALUES = frozenset(
    f.name for model in (Thresholds, InspectionPolicy) for f in fields(model) if f.type == "int"
)


def change_policy(
    conn: psycopg.Connection,
    *,
    values: dict[str, float | None],
    actor: str,
    at: datetime,
    jurisdiction_id: int | None = None,
    device_id: str | None = None,
) -> dict[str, Any]:
    """Set thresholds of a jurisdiction, a device or (neither) the defaults (None: inherit),
    logged with the values before and after (rule A1); the row as it now stands."""
    if not values:
        raise ValueError("no threshold given")
    for name, value in values.items():
        if name in INTEGER_POLICY_VALUES and value is not None and value != int(value):
            raise ValueError(f"{name} is a whole number, not {value}")
    with conn.transaction():
        before = service.policy_row(conn, jurisdiction_id=jurisdiction_id, device_id=device_id)
        try:
            service.set_policy(conn, jurisdiction_id=jurisdiction_id, device_id=device_id, **values)
        except (psycopg.errors.CheckViolation, psycopg.errors.RaiseException) as exc:
            # a value out of its range, or a default left empty: the database says which
            raise ValueError(exc.diag.message_primary or str(exc)) from None
        after = service.policy_row(conn, jurisdiction_id=jurisdiction_id, device_id=device_id)
        assert after is not None
        subject = (
            ("device", device_id)
            if device_id is not None
            else ("jurisdiction", jurisdiction_id)
            if jurisdiction_id is not None
            else ("policy", "default")
        )
        compliance_log.append(
            conn,
            kind="condition_policy.changed",
            subject_type=subject[0],
            subject_id=subject[1] if subject[1] is not None else "default",
            body={
                "changed": values,
                "before": {k: (before or {}).get(k) for k in values},
            },
            actor=actor,
            at=at,
        )
    return after
