"""Scoped reads of assets, their state, events and telemetry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from api.assets.flows import CONDITION_METRICS, CONDITION_SQL
from api.assets.models import Event, TelemetryBucket
from api.auth.models import Principal
from api.scope import device_scope, scoped_device_ids_query


def iso_sql(column: str) -> str:
    """SQL text of a timestamptz as the API's models write times: UTC, ``Z``, microseconds
    only when there are any (formatted by the database: the fleet grid has thousands)."""
    return (
        f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN"
        f" date_part('microseconds', {column})::int %% 1000000 = 0 THEN '' ELSE"
        f" to_char({column} AT TIME ZONE 'UTC', '.US') END || 'Z'"
    )


_LATEST = ", ".join(
    f"max(ds.value) FILTER (WHERE ds.metric = '{m}') AS {m}" for m in CONDITION_METRICS
)

# Assets in the ``Asset`` shape, built as JSON by the database in one pass (state, condition
# and all): the fleet grid lists hundreds of assets with a dozen values each.
_ASSETS_JSON = """
SELECT coalesce(json_agg(a.asset ORDER BY a.id), '[]')::text AS items, max(a.total) AS total
FROM (
    SELECT d.id, count(*) OVER () AS total,
           (SELECT row_to_json(x) FROM (SELECT
                d.id, d.kind, d.model, d.serial_no, d.site_id, s.name AS site_name,
                s.tier AS site_tier, s.jurisdiction_id, s.user_unit_id, s.latitude, s.longitude,
                d.firm_id, f.name AS firm_name, d.manufacturer_id, d.gateway_id,
                {decommissioned} AS decommissioned_at,
                d.registration_code, d.next_inspection_due,
                (SELECT fi.kind FROM compliance_findings fi
                 WHERE fi.rule = 'M12' AND fi.subject_type = 'device' AND fi.subject_id = d.id
                   AND fi.closed_at IS NULL
                 ORDER BY fi.kind = 'inspection_lapsed' DESC LIMIT 1) AS inspection,
                {condition} AS condition,
                {last_seen} AS last_seen,
                coalesce(st.state, json_build_object()) AS state) x) AS asset
    FROM devices d
    JOIN sites s ON s.id = d.site_id
    LEFT JOIN maintenance_firms f ON f.id = d.firm_id
    LEFT JOIN LATERAL (
        SELECT json_object_agg(ds.metric, json_build_object(
                   'value', ds.value, 'ts', {state_ts}, 'good', ds.good))
                   FILTER (WHERE %(metrics)s::text[] IS NULL OR ds.metric = ANY(%(metrics)s))
                   AS state,
               max(ds.ts) AS last_seen, count(*) AS metrics, {latest}
        FROM device_state ds WHERE ds.device_id = d.id
    ) st ON true
    WHERE {{where}}
    ORDER BY d.id LIMIT %(limit)s OFFSET %(offset)s
) a
""".format(
    decommissioned=iso_sql("d.decommissioned_at"),
    condition=CONDITION_SQL,
    last_seen=iso_sql("st.last_seen"),
    state_ts=iso_sql("ds.ts"),
    latest=_LATEST,
)

JsonDict = dict[str, Any]


async def _assets_json(
    conn: psycopg.AsyncConnection,
    *,
    where: list[sql.Composable],
    params: dict[str, Any],
    limit: int,
    offset: int,
    metrics: Sequence[str] | None = None,
) -> tuple[str, int]:
    """(JSON text of the assets matching ``where``, how many match in all); ``metrics`` limits
    the state sent (the condition always reads every metric)."""
    query = sql.SQL(_ASSETS_JSON).format(
        where=sql.SQL(" AND ").join(sql.SQL("({})").format(w) for w in where)
    )
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, {**params, "limit": limit, "offset": offset, "metrics": metrics})
        row = await cur.fetchone()
    assert row is not None
    return row[0], int(row[1] or 0)


async def list_assets_json(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    kind: str | None = None,
    site_id: int | None = None,
    search: str | None = None,
    limit: int = 500,
    offset: int = 0,
    metrics: Sequence[str] | None = None,
) -> str:
    """The caller's assets (rule A2), by id, with their live state: an ``AssetPage`` as JSON."""
    scope = device_scope(principal)
    where = [scope.condition]
    params: dict[str, Any] = dict(scope.params)
    if kind is not None:
        where.append(sql.SQL("d.kind = %(kind)s"))
        params["kind"] = kind
    if site_id is not None:
        where.append(sql.SQL("d.site_id = %(site_id)s"))
        params["site_id"] = site_id
    if search:
        where.append(sql.SQL("d.id ILIKE %(search)s"))
        params["search"] = "%" + search.replace("\\", "\\\\").replace("%", r"\%") + "%"
    items, total = await _assets_json(
        conn,
        where=where,
        params=params,
        limit=limit,
        offset=offset,
        # an empty list would travel as NULL (every metric): no metric is named ""
        metrics=(list(metrics) or [""]) if metrics is not None else None,
    )
    if total == 0 and offset:
        total = await count_assets(conn, principal=principal)
    return f'{{"total":{total},"items":{items}}}'


async def get_assets(
    conn: psycopg.AsyncConnection, *, principal: Principal, device_ids: Sequence[str]
) -> list[JsonDict]:
    """Those of ``device_ids`` the caller may see, with their live state (``Asset`` shape)."""
    scope = device_scope(principal)
    where = [scope.condition, sql.SQL("d.id = ANY(%(ids)s)")]
    params = {**scope.params, "ids": list(device_ids)}
    items, _ = await _assets_json(
        conn, where=where, params=params, limit=max(1, len(device_ids)), offset=0
    )
    return json.loads(items)


async def get_asset(
    conn: psycopg.AsyncConnection, *, principal: Principal, device_id: str
) -> JsonDict | None:
    """One asset, or None when it does not exist or is outside the caller's scope."""
    found = await get_assets(conn, principal=principal, device_ids=[device_id])
    return found[0] if found else None


async def count_assets(conn: psycopg.AsyncConnection, *, principal: Principal) -> int:
    """How many assets the caller sees."""
    scope = device_scope(principal)
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            sql.SQL("SELECT count(*) FROM devices d WHERE {}").format(scope.condition),
            scope.params,
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def visible_device_ids(
    conn: psycopg.AsyncConnection, *, principal: Principal, device_ids: Sequence[str]
) -> set[str]:
    """Those of ``device_ids`` the caller may see."""
    scope = device_scope(principal)
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(scoped_device_ids_query(scope), {**scope.params, "ids": list(device_ids)})
        return {row[0] for row in await cur.fetchall()}


async def list_events(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    device_id: str,
    start: datetime,
    end: datetime,
    metric: str | None,
    limit: int,
) -> list[Event]:
    """Events of one in-scope device in [start, end), newest first."""
    scope = device_scope(principal)
    params: dict[str, Any] = {
        **scope.params,
        "device": device_id,
        "start": start,
        "end": end,
        "limit": limit,
        "metric": metric,
    }
    query = sql.SQL(
        """SELECT e.id, e.device_id, e.metric, e.ts, e.value, e.previous
           FROM events e JOIN devices d ON d.id = e.device_id
           WHERE ({}) AND e.device_id = %(device)s AND e.ts >= %(start)s AND e.ts < %(end)s
             AND (%(metric)s::text IS NULL OR e.metric = %(metric)s)
           ORDER BY e.ts DESC, e.id DESC LIMIT %(limit)s"""
    ).format(scope.condition)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [Event.model_validate(row) for row in await cur.fetchall()]


async def telemetry_buckets(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket_s: int,
) -> list[TelemetryBucket]:
    """One metric of an in-scope device over [start, end) in ``date_bin`` buckets.

    ``date_bin`` works the same on plain PostgreSQL and TimescaleDB; the origin is the Unix
    epoch so that bucket edges do not depend on the requested range. ``telemetry_series``
    reads one array element per stored instant through the (device, ts) key (migration 0105).
    """
    scope = device_scope(principal)
    query = sql.SQL(
        """SELECT date_bin(make_interval(secs => %(bucket)s), t.ts,
                           TIMESTAMPTZ '1970-01-01 00:00:00+00') AS ts,
                  avg(t.value) AS avg, min(t.value) AS min, max(t.value) AS max,
                  (array_agg(t.value ORDER BY t.ts DESC))[1] AS last, count(*) AS count
           FROM telemetry_series(%(device)s, %(metric)s, %(start)s, %(end)s) t
           WHERE t.good AND EXISTS (SELECT 1 FROM devices d WHERE d.id = %(device)s AND ({}))
           GROUP BY 1 ORDER BY 1"""
    ).format(scope.condition)
    params = {
        **scope.params,
        "bucket": bucket_s,
        "device": device_id,
        "metric": metric,
        "start": start,
        "end": end,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [TelemetryBucket.model_validate(row) for row in await cur.fetchall()]
