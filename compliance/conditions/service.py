"""Reads of the latest device state for the condition checks (one set-based query)."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from compliance.conditions.models import InspectionPolicy, Thresholds

_LATEST = """
SELECT d.id AS device_id, d.kind,
       max(s.value) FILTER (WHERE s.metric = 'lamp_on') AS lamp_on,
       max(s.value) FILTER (WHERE s.metric = 'lamp_power') AS lamp_power,
       max(s.value) FILTER (WHERE s.metric = 'lamps_total') AS lamps_total,
       max(s.value) FILTER (WHERE s.metric = 'lamps_out') AS lamps_out,
       max(s.value) FILTER (WHERE s.metric = 'voltage_l1') AS voltage_l1,
       max(s.value) FILTER (WHERE s.metric = 'voltage_l2') AS voltage_l2,
       max(s.value) FILTER (WHERE s.metric = 'voltage_l3') AS voltage_l3,
       max(s.value) FILTER (WHERE s.metric = 'power_total') AS power_total,
       max(s.value) FILTER (WHERE s.metric = 'flow_rate') AS flow_rate,
       max(s.value) FILTER (WHERE s.metric = 'dim_level') AS dim_level,
       max(s.value) FILTER (WHERE s.metric = 'supply_voltage') AS supply_voltage,
       max(s.value) FILTER (WHERE s.metric = 'lux') AS lux,
       min(si.timezone) AS timezone
FROM devices d
JOIN sites si ON si.id = d.site_id
JOIN device_state s ON s.device_id = d.id AND s.good
WHERE d.kind IN ('light_pole', 'high_mast', 'energy_meter', 'water_meter')
  AND d.decommissioned_at IS NULL
  AND (%(devices)s::text[] IS NULL OR d.id = ANY(%(devices)s::text[]))
GROUP BY d.id, d.kind
"""

# The thresholds in force per device: device over jurisdiction over default.
POLICY_COLUMNS = tuple(f.name for f in fields(Thresholds))
# Rule L4's intervals and limits, in the same rows.
INSPECTION_COLUMNS = tuple(f.name for f in fields(InspectionPolicy))


def _in_force(columns: tuple[str, ...], *, devices: bool = True) -> str:
    """Per device (or per site: jurisdiction over default), each column's value in force."""
    if not devices:
        chosen = ", ".join(f"coalesce(pj.{c}, dflt.{c}) AS {c}" for c in columns)
        return f"""
SELECT si.id AS site_id, {chosen}
FROM sites si
CROSS JOIN (SELECT * FROM condition_policies
            WHERE jurisdiction_id IS NULL AND device_id IS NULL) dflt
LEFT JOIN condition_policies pj ON pj.jurisdiction_id = si.jurisdiction_id
"""
    chosen = ", ".join(f"coalesce(pd.{c}, pj.{c}, dflt.{c}) AS {c}" for c in columns)
    return f"""
SELECT d.id AS device_id, {chosen}
FROM devices d
JOIN sites si ON si.id = d.site_id
CROSS JOIN (SELECT * FROM condition_policies
            WHERE jurisdiction_id IS NULL AND device_id IS NULL) dflt
LEFT JOIN condition_policies pj ON pj.jurisdiction_id = si.jurisdiction_id
LEFT JOIN condition_policies pd ON pd.device_id = d.id
"""


_POLICY = _in_force(POLICY_COLUMNS)
DEVICE_INSPECTION_POLICY = _in_force(INSPECTION_COLUMNS)
SITE_INSPECTION_POLICY = _in_force(INSPECTION_COLUMNS, devices=False)


_POLICY_OF_P = ", ".join(f"p.{c}" for c in POLICY_COLUMNS)


def latest_readings(
    conn: psycopg.Connection, *, devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """The readings the checks need, one row per lighting device or meter, with the thresholds
    in force for it."""
    query = f"SELECT r.*, {_POLICY_OF_P} FROM ({_LATEST}) r JOIN ({_POLICY}) p USING (device_id)"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {"devices": devices}).fetchall()


def counter_readings(
    conn: psycopg.Connection, *, metrics: list[str], devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """Each counter's latest good reading beside the mark the check keeps (rule E4)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT s.device_id, d.model, s.metric, s.value, s.ts, m.value AS mark, "
            f"m.ts AS mark_ts, {_POLICY_OF_P} FROM device_state s "
            "JOIN devices d ON d.id = s.device_id "
            f"JOIN ({_POLICY}) p ON p.device_id = s.device_id "
            "LEFT JOIN counter_marks m ON m.device_id = s.device_id AND m.metric = s.metric "
            "WHERE s.good AND s.metric = ANY(%(metrics)s) AND d.decommissioned_at IS NULL "
            "AND (%(devices)s::text[] IS NULL OR s.device_id = ANY(%(devices)s::text[])) "
            "AND (m.value IS NULL OR m.value <> s.value) ORDER BY s.device_id, s.metric",
            {"metrics": metrics, "devices": devices},
        ).fetchall()


def set_mark(
    conn: psycopg.Connection, *, device_id: str, metric: str, value: float, ts: datetime
) -> None:
    """The counter's new mark."""
    conn.execute(
        "INSERT INTO counter_marks (device_id, metric, value, ts) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (device_id, metric) DO UPDATE SET value = excluded.value, ts = excluded.ts",
        (device_id, metric, value, ts),
    )


def set_policy(
    conn: psycopg.Connection,
    *,
    jurisdiction_id: int | None = None,
    device_id: str | None = None,
    **values: float | None,
) -> None:
    """Set thresholds for a jurisdiction or a device (None: inherit); neither: the defaults."""
    unknown = set(values) - set(POLICY_COLUMNS) - set(INSPECTION_COLUMNS)
    if unknown:
        raise ValueError(f"no such threshold: {', '.join(sorted(unknown))}")
    if jurisdiction_id is not None and device_id is not None:
        raise ValueError("a policy is of a jurisdiction or of a device, not both")
    owner = (
        ("jurisdiction_id", jurisdiction_id)
        if jurisdiction_id is not None
        else ("device_id", device_id)
        if device_id is not None
        else None
    )
    names = sql.SQL(", ").join(sql.Identifier(k) for k in values)
    marks = sql.SQL(", ").join(sql.Placeholder(k) for k in values)
    if owner is None:
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values
        )
        conn.execute(
            sql.SQL(
                "UPDATE condition_policies SET {} WHERE jurisdiction_id IS NULL "
                "AND device_id IS NULL"
            ).format(sets),
            values,
        )
        return
    column, key = owner
    updates = sql.SQL(", ").join(
        sql.SQL("{k} = excluded.{k}").format(k=sql.Identifier(k)) for k in values
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO condition_policies ({owner}, {names}) VALUES (%(owner)s, {marks}) "
            "ON CONFLICT ({owner}) DO UPDATE SET {updates}"
        ).format(owner=sql.Identifier(column), names=names, marks=marks, updates=updates),
        {**values, "owner": key},
    )


def meter_silence(
    conn: psycopg.Connection, *, devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """Each meter's last reading (its registration when never heard) with the thresholds in
    force (rule E1)."""
    query = (
        f"SELECT d.id AS device_id, coalesce(max(s.ts), d.registered_at) AS last_reading, "
        f"{_POLICY_OF_P} FROM devices d JOIN ({_POLICY}) p ON p.device_id = d.id "
        "LEFT JOIN device_state s ON s.device_id = d.id "
        "WHERE d.kind IN ('energy_meter', 'water_meter') AND d.decommissioned_at IS NULL "
        "AND (%(devices)s::text[] IS NULL OR d.id = ANY(%(devices)s::text[])) "
        f"GROUP BY d.id, d.registered_at, {_POLICY_OF_P} ORDER BY d.id"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {"devices": devices}).fetchall()


# Rule E3: what each kind of meter consumes, read from its cumulative counter's hourly roll-up.
CONSUMPTION_COUNTERS = {"energy_meter": "import_energy", "water_meter": "forward_volume"}


def hourly_consumption(
    conn: psycopg.Connection, *, until: datetime, devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """Per meter, the consumption of each complete hour before ``until`` within its policy's
    history (the counter's last value of the hour minus that of the hour before), with the
    thresholds in force; oldest first."""
    query = f"""
        WITH meters AS (
            SELECT d.id AS device_id, d.kind, {_POLICY_OF_P}
            FROM devices d JOIN ({_POLICY}) p ON p.device_id = d.id
            WHERE d.kind IN ('energy_meter', 'water_meter') AND d.decommissioned_at IS NULL
              AND (%(devices)s::text[] IS NULL OR d.id = ANY(%(devices)s::text[]))
        ), hours AS (
            SELECT h.device_id, h.bucket,
                   h.last_value - lag(h.last_value) OVER w AS consumption,
                   h.bucket - lag(h.bucket) OVER w AS step
            FROM telemetry_hourly h JOIN meters m ON m.device_id = h.device_id
            WHERE h.metric = %(counters)s::jsonb ->> m.kind
              AND h.bucket < %(until)s
              AND h.bucket >= %(until)s - make_interval(days => m.anomaly_history_days)
                                        - interval '1 hour'
            WINDOW w AS (PARTITION BY h.device_id ORDER BY h.bucket)
        )
        SELECT m.*, h.bucket, h.consumption FROM meters m
        JOIN hours h ON h.device_id = m.device_id
        WHERE h.step = interval '1 hour'  -- a gap stays a gap: no hour is made up across it
        ORDER BY m.device_id, h.bucket
    """
    with conn.cursor(row_factory=dict_row) as cur:
        params = {"until": until, "devices": devices, "counters": json.dumps(CONSUMPTION_COUNTERS)}
        return cur.execute(query, params).fetchall()


ALL_POLICY_COLUMNS = POLICY_COLUMNS + INSPECTION_COLUMNS
_ROW_COLUMNS = ", ".join(("jurisdiction_id", "device_id", *ALL_POLICY_COLUMNS))


def policy_row(
    conn: psycopg.Connection, *, jurisdiction_id: int | None = None, device_id: str | None = None
) -> dict[str, Any] | None:
    """The policy row of a jurisdiction, a device, or (neither) the defaults; None if unset."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_ROW_COLUMNS} FROM condition_policies WHERE "
            "jurisdiction_id IS NOT DISTINCT FROM %s AND device_id IS NOT DISTINCT FROM %s",
            (jurisdiction_id, device_id),
        ).fetchone()


async def list_policies(
    conn: psycopg.AsyncConnection, *, scope: sql.Composable, scope_params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The defaults, and the rows of the jurisdictions and devices of the caller's devices
    (``scope``: a condition over alias ``d``)."""
    query = sql.SQL(
        f"SELECT {_ROW_COLUMNS} FROM condition_policies p "
        "WHERE (p.jurisdiction_id IS NULL AND p.device_id IS NULL) OR EXISTS ("
        "SELECT 1 FROM devices d JOIN sites si ON si.id = d.site_id WHERE ({}) "
        "AND (d.id = p.device_id OR si.jurisdiction_id = p.jurisdiction_id)) "
        "ORDER BY p.device_id NULLS FIRST, p.jurisdiction_id NULLS FIRST"
    ).format(scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, scope_params)
        return await cur.fetchall()


async def policy_in_force(conn: psycopg.AsyncConnection, *, device_id: str) -> dict[str, Any]:
    """Each value in force for a device and where it comes from (device, jurisdiction,
    default)."""
    pick = ", ".join(
        f"coalesce(pd.{c}, pj.{c}, dflt.{c}) AS {c}, CASE WHEN pd.{c} IS NOT NULL THEN 'device' "
        f"WHEN pj.{c} IS NOT NULL THEN 'jurisdiction' ELSE 'default' END AS {c}__from"
        for c in ALL_POLICY_COLUMNS
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT si.jurisdiction_id, {pick} FROM devices d JOIN sites si ON si.id = d.site_id "
            "CROSS JOIN (SELECT * FROM condition_policies WHERE jurisdiction_id IS NULL "
            "AND device_id IS NULL) dflt "
            "LEFT JOIN condition_policies pj ON pj.jurisdiction_id = si.jurisdiction_id "
            "LEFT JOIN condition_policies pd ON pd.device_id = d.id WHERE d.id = %s",
            (device_id,),
        )
        return await cur.fetchone() or {}
