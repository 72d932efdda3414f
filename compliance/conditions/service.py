"""Reads of the latest device state for the condition checks (one set-based query)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

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
       max(s.value) FILTER (WHERE s.metric = 'flow_rate') AS flow_rate
FROM devices d
JOIN device_state s ON s.device_id = d.id AND s.good
WHERE d.kind IN ('light_pole', 'high_mast', 'energy_meter', 'water_meter')
  AND d.decommissioned_at IS NULL
  AND (%(devices)s::text[] IS NULL OR d.id = ANY(%(devices)s::text[]))
GROUP BY d.id, d.kind
"""


def latest_readings(
    conn: psycopg.Connection, *, devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """The readings the checks need, one row per lighting device or meter."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_LATEST, {"devices": devices}).fetchall()


def counter_readings(
    conn: psycopg.Connection, *, metrics: list[str], devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """Each counter's latest good reading beside the mark the check keeps (rule E4)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT s.device_id, d.model, s.metric, s.value, s.ts, m.value AS mark, "
            "m.ts AS mark_ts FROM device_state s JOIN devices d ON d.id = s.device_id "
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
