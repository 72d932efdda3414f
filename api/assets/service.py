"""Scoped reads of assets, their state, events and telemetry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from api.assets.flows import condition
from api.assets.models import Asset, AssetPage, Event, StateValue, TelemetryBucket
from api.auth.models import Principal
from api.scope import device_scope, scoped_device_ids_query

# One row per device: its site and firm, and its state as a JSON object keyed by metric.
_ASSET_SELECT = sql.SQL(
    """SELECT d.id, d.kind, d.model, d.serial_no, d.site_id, s.name AS site_name,
              s.tier AS site_tier, s.jurisdiction_id, s.user_unit_id, s.latitude, s.longitude,
              d.firm_id, f.name AS firm_name, d.manufacturer_id, d.gateway_id,
              d.decommissioned_at,
              (SELECT jsonb_object_agg(ds.metric, jsonb_build_object(
                          'value', ds.value, 'ts', ds.ts, 'good', ds.good))
                 FROM device_state ds WHERE ds.device_id = d.id) AS state,
              count(*) OVER () AS total
       FROM devices d
       JOIN sites s ON s.id = d.site_id
       LEFT JOIN maintenance_firms f ON f.id = d.firm_id"""
)


def _asset(row: dict[str, Any]) -> Asset:
    raw = row.pop("state") or {}
    row.pop("total", None)
    state = {metric: StateValue.model_validate(v) for metric, v in raw.items()}
    return Asset(
        **row,
        state=state,
        condition=condition(kind=row["kind"], state={m: v.value for m, v in state.items()}),
        last_seen=max((v.ts for v in state.values()), default=None),
    )


async def list_assets(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    kind: str | None = None,
    site_id: int | None = None,
    search: str | None = None,
    limit: int = 500,
    offset: int = 0,
) -> AssetPage:
    """The caller's assets (rule A2), by id, with their live state."""
    scope = device_scope(principal)
    where = [scope.condition]
    params: dict[str, Any] = {**scope.params, "limit": limit, "offset": offset}
    if kind is not None:
        where.append(sql.SQL("d.kind = %(kind)s"))
        params["kind"] = kind
    if site_id is not None:
        where.append(sql.SQL("d.site_id = %(site_id)s"))
        params["site_id"] = site_id
    if search:
        where.append(sql.SQL("d.id ILIKE %(search)s"))
        params["search"] = "%" + search.replace("\\", "\\\\").replace("%", r"\%") + "%"
    query = sql.SQL("{} WHERE {} ORDER BY d.id LIMIT %(limit)s OFFSET %(offset)s").format(
        _ASSET_SELECT, sql.SQL(" AND ").join(sql.SQL("({})").format(w) for w in where)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    if rows:
        total = int(rows[0]["total"])
    else:
        total = await count_assets(conn, principal=principal) if offset else 0
    return AssetPage(total=total, items=[_asset(row) for row in rows])


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


async def get_assets(
    conn: psycopg.AsyncConnection, *, principal: Principal, device_ids: Sequence[str]
) -> list[Asset]:
    """Those of ``device_ids`` the caller may see, with their live state."""
    scope = device_scope(principal)
    query = sql.SQL("{} WHERE ({}) AND d.id = ANY(%(ids)s) ORDER BY d.id").format(
        _ASSET_SELECT, scope.condition
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params, "ids": list(device_ids)})
        return [_asset(row) for row in await cur.fetchall()]


async def get_asset(
    conn: psycopg.AsyncConnection, *, principal: Principal, device_id: str
) -> Asset | None:
    """One asset, or None when it does not exist or is outside the caller's scope."""
    found = await get_assets(conn, principal=principal, device_ids=[device_id])
    return found[0] if found else None


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
    epoch so that bucket edges do not depend on the requested range.
    """
    scope = device_scope(principal)
    query = sql.SQL(
        """SELECT date_bin(make_interval(secs => %(bucket)s), t.ts,
                           TIMESTAMPTZ '1970-01-01 00:00:00+00') AS ts,
                  avg(t.value) AS avg, min(t.value) AS min, max(t.value) AS max,
                  (array_agg(t.value ORDER BY t.ts DESC))[1] AS last, count(*) AS count
           FROM telemetry t
           WHERE t.device_id = %(device)s AND t.metric = %(metric)s
             AND t.ts >= %(start)s AND t.ts < %(end)s AND t.good
             AND EXISTS (SELECT 1 FROM devices d WHERE d.id = t.device_id AND ({}))
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
