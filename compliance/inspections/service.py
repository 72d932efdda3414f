"""All SQL of the inspection rounds (rule L4): rounds, findings, and what falls due."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from compliance.conditions.service import (
    DEVICE_INSPECTION_POLICY,
    INSPECTION_COLUMNS,
    SITE_INSPECTION_POLICY,
)
from compliance.inspections.models import (
    LIGHTING_KINDS,
    MissedRound,
    Round,
    RoundKind,
)
from vigil.db.rows import columns

ROUND_COLUMNS = columns(Round)
FINDING_COLUMNS = columns(MissedRound)
_POLICY_OF_P = ", ".join(f"p.{c}" for c in INSPECTION_COLUMNS)


def lighting_device(conn: psycopg.Connection, *, device_id: str) -> dict[str, Any] | None:
    """A pole or mast in service with its site and the policy in force for it; None if not."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT d.id AS device_id, d.site_id, d.registered_at, {_POLICY_OF_P} "
            f"FROM devices d JOIN ({DEVICE_INSPECTION_POLICY}) p ON p.device_id = d.id "
            "WHERE d.id = %s AND d.kind = ANY(%s) AND d.decommissioned_at IS NULL",
            (device_id, list(LIGHTING_KINDS)),
        ).fetchone()


def lighting_sections(
    conn: psycopg.Connection, *, site_id: int | None = None
) -> list[dict[str, Any]]:
    """Sites with poles or masts in service: since when, whether any is under telemetry (behind a
    gateway), their time zone and the policy in force (jurisdiction over default)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT si.id AS site_id, si.timezone, min(d.registered_at) AS since, "
            f"bool_or(d.gateway_id IS NOT NULL) AS telemetry, {_POLICY_OF_P} "
            "FROM sites si JOIN devices d ON d.site_id = si.id "
            f"JOIN ({SITE_INSPECTION_POLICY}) p ON p.site_id = si.id "
            "WHERE d.kind = ANY(%(kinds)s) AND d.decommissioned_at IS NULL "
            "AND (%(site)s::bigint IS NULL OR si.id = %(site)s) "
            f"GROUP BY si.id, si.timezone, {_POLICY_OF_P} ORDER BY si.id",
            {"kinds": list(LIGHTING_KINDS), "site": site_id},
        ).fetchall()


def last_device_rounds(
    conn: psycopg.Connection, *, kinds: list[str], devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """Per pole or mast in service and kind of round, its last round (None: never) and its
    registration, with the policy in force."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT d.id AS device_id, d.site_id, d.registered_at, k.kind, "
            f"max(r.performed_at) AS last_done, {_POLICY_OF_P} "
            "FROM devices d CROSS JOIN unnest(%(kinds)s::text[]) AS k (kind) "
            f"JOIN ({DEVICE_INSPECTION_POLICY}) p ON p.device_id = d.id "
            "LEFT JOIN inspection_rounds r ON r.device_id = d.id AND r.kind = k.kind "
            "WHERE d.kind = ANY(%(lighting)s) AND d.decommissioned_at IS NULL "
            "AND (%(devices)s::text[] IS NULL OR d.id = ANY(%(devices)s::text[])) "
            f"GROUP BY d.id, d.site_id, d.registered_at, k.kind, {_POLICY_OF_P} "
            "ORDER BY d.id, k.kind",
            {"kinds": kinds, "lighting": list(LIGHTING_KINDS), "devices": devices},
        ).fetchall()


def count_section_rounds(
    conn: psycopg.Connection,
    *,
    site_id: int,
    kinds: list[str],
    start: datetime,
    end: datetime,
) -> int:
    """How many rounds of these kinds a section had in [start, end)."""
    row = conn.execute(
        "SELECT count(*) FROM inspection_rounds WHERE site_id = %s AND kind = ANY(%s) "
        "AND device_id IS NULL AND performed_at >= %s AND performed_at < %s",
        (site_id, kinds, start, end),
    ).fetchone()
    return int(row[0]) if isinstance(row, tuple) else int(next(iter(row.values())))


def insert_round(
    conn: psycopg.Connection,
    *,
    kind: RoundKind,
    site_id: int,
    device_id: str | None,
    performed_at: datetime,
    recorded_at: datetime,
    recorded_by: str,
    technician_id: int | None,
    measured: float | None,
    unit: str | None,
    test_voltage_v: float | None,
    passed: bool,
    limits: dict[str, Any],
    note: str,
) -> Round:
    """Save one round."""
    with conn.cursor(row_factory=class_row(Round)) as cur:
        saved = cur.execute(
            "INSERT INTO inspection_rounds (kind, site_id, device_id, performed_at, recorded_at, "
            "recorded_by, technician_id, measured, unit, test_voltage_v, passed, limits, note) "
            "VALUES (%(kind)s, %(site_id)s, %(device_id)s, %(performed_at)s, %(recorded_at)s, "
            "%(recorded_by)s, %(technician_id)s, %(measured)s, %(unit)s, %(test_voltage_v)s, "
            f"%(passed)s, %(limits)s, %(note)s) RETURNING {ROUND_COLUMNS}",
            {
                "kind": str(kind),
                "site_id": site_id,
                "device_id": device_id,
                "performed_at": performed_at,
                "recorded_at": recorded_at,
                "recorded_by": recorded_by,
                "technician_id": technician_id,
                "measured": measured,
                "unit": unit,
                "test_voltage_v": test_voltage_v,
                "passed": passed,
                "limits": Jsonb(limits),
                "note": note,
            },
        ).fetchone()
    assert saved is not None
    return saved


def insert_finding(
    conn: psycopg.Connection,
    *,
    kind: RoundKind,
    site_id: int,
    device_id: str | None,
    period_start: datetime,
    due_by: datetime,
    required: int,
    done: int,
    detected_at: datetime,
    policy: dict[str, Any],
) -> MissedRound | None:
    """Save a finding; None if this period's was found before."""
    with conn.cursor(row_factory=class_row(MissedRound)) as cur:
        return cur.execute(
            "INSERT INTO inspection_findings (kind, site_id, device_id, period_start, due_by, "
            "required, done, detected_at, policy) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"ON CONFLICT DO NOTHING RETURNING {FINDING_COLUMNS}",
            (
                str(kind),
                site_id,
                device_id,
                period_start,
                due_by,
                required,
                done,
                detected_at,
                Jsonb(policy),
            ),
        ).fetchone()


def open_device_findings(
    conn: psycopg.Connection, *, device_id: str, kind: RoundKind, before: datetime
) -> list[MissedRound]:
    """A device's unresolved findings of one kind whose period began before ``before``."""
    with conn.cursor(row_factory=class_row(MissedRound)) as cur:
        return cur.execute(
            f"SELECT {FINDING_COLUMNS} FROM inspection_findings WHERE device_id = %s "
            "AND kind = %s AND resolved_at IS NULL AND period_start < %s ORDER BY id",
            (device_id, str(kind), before),
        ).fetchall()


def open_section_findings(
    conn: psycopg.Connection, *, site_id: int, kinds: list[str], covering: datetime
) -> list[MissedRound]:
    """A section's unresolved findings of these kinds whose period holds ``covering``."""
    with conn.cursor(row_factory=class_row(MissedRound)) as cur:
        return cur.execute(
            f"SELECT {FINDING_COLUMNS} FROM inspection_findings WHERE site_id = %s "
            "AND device_id IS NULL AND kind = ANY(%s) AND resolved_at IS NULL "
            "AND period_start <= %s AND due_by > %s ORDER BY id",
            (site_id, kinds, covering, covering),
        ).fetchall()


def resolve_finding(
    conn: psycopg.Connection, *, finding_id: int, round_id: int, at: datetime, done: int | None
) -> None:
    """A finding made good by a round (late)."""
    conn.execute(
        "UPDATE inspection_findings SET resolved_at = %s, resolved_by = %s, "
        "done = coalesce(%s, done) WHERE id = %s",
        (at, round_id, done, finding_id),
    )


# -- scoped reads for the API (rule A2) -------------------------------------------------------

# A round or finding is seen by whoever sees its device, or (a section's) any device of its site.
_VISIBLE = (
    "EXISTS (SELECT 1 FROM devices d WHERE ({scope}) AND d.site_id = x.site_id "
    "AND (x.device_id IS NULL OR d.id = x.device_id))"
)


async def list_rounds(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    device_id: str | None = None,
    site_id: int | None = None,
    kind: RoundKind | None = None,
    limit: int = 200,
) -> list[Round]:
    """Rounds in ``scope`` (a condition over alias ``d``), newest first."""
    return await _scoped(
        conn,
        model=Round,
        select=f"SELECT {ROUND_COLUMNS} FROM inspection_rounds x",
        filters="AND (%(device)s::text IS NULL OR x.device_id = %(device)s) ",
        order="x.performed_at DESC, x.id DESC",
        scope=scope,
        params={**scope_params, "device": device_id, "site": site_id, "kind": kind, "limit": limit},
    )


async def list_findings(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    unresolved: bool | None = None,
    site_id: int | None = None,
    kind: RoundKind | None = None,
    limit: int = 200,
) -> list[MissedRound]:
    """Findings in ``scope`` (a condition over alias ``d``), newest period first."""
    return await _scoped(
        conn,
        model=MissedRound,
        select=f"SELECT {FINDING_COLUMNS} FROM inspection_findings x",
        filters="AND (%(open)s::boolean IS NULL OR (x.resolved_at IS NULL) = %(open)s) ",
        order="x.period_start DESC, x.id DESC",
        scope=scope,
        params={**scope_params, "open": unresolved, "site": site_id, "kind": kind, "limit": limit},
    )


async def _scoped(
    conn: psycopg.AsyncConnection,
    *,
    model: type,
    select: str,
    filters: str,
    order: str,
    scope: sql.Composable,
    params: dict[str, Any],
) -> list[Any]:
    """Rows of rounds or findings (alias ``x``) the caller sees, by site and kind, in order."""
    query = sql.SQL(
        f"{select} WHERE {_VISIBLE} {filters}"
        "AND (%(site)s::bigint IS NULL OR x.site_id = %(site)s) "
        "AND (%(kind)s::text IS NULL OR x.kind = %(kind)s) "
        f"ORDER BY {order} LIMIT %(limit)s"
    ).format(scope=scope)
    kind = params["kind"]
    async with conn.cursor(row_factory=class_row(model)) as cur:
        await cur.execute(query, {**params, "kind": str(kind) if kind else None})
        return await cur.fetchall()


async def section_visible(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    site_id: int,
) -> bool:
    """Whether the caller sees any pole or mast of the site (rule A2)."""
    query = sql.SQL(
        "SELECT 1 FROM devices d WHERE ({}) AND d.site_id = %(site)s AND d.kind = ANY(%(kinds)s)"
    ).format(scope)
    cur = await conn.execute(
        query, {**scope_params, "site": site_id, "kinds": list(LIGHTING_KINDS)}
    )
    return await cur.fetchone() is not None


async def visible_devices(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    kinds: list[str],
    device_id: str | None = None,
) -> list[str]:
    """The caller's devices of these kinds in service (rule A2)."""
    query = sql.SQL(
        "SELECT d.id FROM devices d WHERE ({}) AND d.kind = ANY(%(kinds)s) "
        "AND d.decommissioned_at IS NULL AND (%(device)s::text IS NULL OR d.id = %(device)s)"
    ).format(scope)
    cur = await conn.execute(query, {**scope_params, "kinds": kinds, "device": device_id})
    return [row["id"] if isinstance(row, dict) else row[0] for row in await cur.fetchall()]
