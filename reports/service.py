"""Report queries, scoped by rule A2. Read-only: the facts are the domains' own rows and log."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from reports.models import MonthlyFirmRow, RescueKpiRow
from workorders import service as workorders


def month_bounds(month: date) -> tuple[date, date]:
    """First day of ``month`` and of the month after (calendar dates, read at each site)."""
    start = month.replace(day=1)
    end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return start, end


async def rescue_kpis(
    conn: psycopg.AsyncConnection,
    *,
    of: Literal["all", "jurisdiction", "firm"],
    party_id: int | None,
    first: date,
    last: date,
) -> list[RescueKpiRow]:
    """Rule R7 rows of the rescue domain's view: every row, or those of one jurisdiction or
    one firm (``party_id``; none: no row)."""
    where = [sql.SQL("k.month >= %(first)s AND k.month <= %(last)s")]
    params: dict[str, Any] = {"first": first, "last": last, "party": party_id}
    if of == "jurisdiction":
        where.append(sql.SQL("k.jurisdiction_id = %(party)s"))
    elif of == "firm":
        where.append(sql.SQL("k.firm_id = %(party)s"))
    query = sql.SQL(
        """SELECT k.firm_id, f.name AS firm_name, k.jurisdiction_id, k.month, k.incidents,
                  k.answered_within_3_min::float8 AS answered_within_3_min,
                  k.arrived_within_deadline::float8 AS arrived_within_deadline,
                  k.mean_arrival_min::float8 AS mean_arrival_min,
                  k.p90_arrival_min::float8 AS p90_arrival_min,
                  k.mean_release_min::float8 AS mean_release_min
           FROM rescue_kpis_monthly k LEFT JOIN maintenance_firms f ON f.id = k.firm_id
           WHERE {} ORDER BY k.month, k.firm_id, k.jurisdiction_id"""
    ).format(sql.SQL(" AND ").join(where))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [RescueKpiRow.model_validate(row) for row in await cur.fetchall()]


# States in which an elevator is overdue (an override lifts the lockout, not the lapse).
OVERDUE_STATES = ("overdue", "lockout_pending", "lockout_recommended", "locked_out", "overridden")

_MONTHLY = """
WITH scoped AS (
    -- rule A4: the month runs from local midnight to local midnight at each elevator's site
    SELECT d.id, d.firm_id,
           %(first)s::date::timestamp AT TIME ZONE si.timezone AS lo,
           %(after)s::date::timestamp AT TIME ZONE si.timezone AS hi
    FROM devices d JOIN sites si ON si.id = d.site_id
    WHERE d.kind = 'elevator' AND d.firm_id IS NOT NULL AND ({scope})
), records AS (
    SELECT s.firm_id, v.verdict
    FROM maintenance_records r
    JOIN scoped s ON s.id = r.device_id
    LEFT JOIN LATERAL (SELECT mv.verdict FROM maintenance_verdicts mv
                       WHERE mv.record_id = r.id ORDER BY mv.id DESC LIMIT 1) v ON true
    WHERE r.claimed_start >= s.lo AND r.claimed_start < s.hi
      -- a corrected record counts through its correction only (rule M4)
      AND NOT EXISTS (SELECT 1 FROM maintenance_records c WHERE c.corrects_id = r.id)
), escalations AS (
    SELECT s.firm_id, l.subject_id AS device_id, l.kind, l.body::jsonb ->> 'to' AS to_state
    FROM compliance_log l JOIN scoped s ON s.id = l.subject_id
    WHERE l.subject_type = 'device' AND l.at >= s.lo AND l.at < s.hi
      AND l.kind IN ('escalation.transition', 'escalation.override')
), overdue AS (
    -- every elevator overdue at any time in the month: it became overdue in it, or it was
    -- still overdue when the month began
    SELECT s.firm_id, s.id AS device_id FROM scoped s
    WHERE EXISTS (SELECT 1 FROM escalations x
                  WHERE x.device_id = s.id AND x.to_state = ANY(%(overdue_states)s))
       OR (SELECT l.body::jsonb ->> 'to' FROM compliance_log l
           WHERE l.subject_type = 'device' AND l.subject_id = s.id AND l.at < s.lo
             AND l.kind IN ('escalation.transition', 'escalation.override')
           ORDER BY l.seq DESC LIMIT 1) = ANY(%(overdue_states)s)
), incidents AS (
    SELECT s.firm_id,
           EXISTS (SELECT 1 FROM rescue_steps st
                   WHERE st.incident_id = i.id AND st.step = 'arrived')
           AND NOT EXISTS (SELECT 1 FROM rescue_breaches b WHERE b.incident_id = i.id)
               AS in_time
    FROM rescue_incidents i JOIN scoped s ON s.id = i.device_id
    WHERE i.status <> 'false_alarm' AND i.reported_at >= s.lo AND i.reported_at < s.hi
)
SELECT f.id AS firm_id, f.name AS firm_name, %(month)s::date AS month, e.elevators,
       (SELECT count(*) FROM records r WHERE r.firm_id = f.id AND r.verdict = 'verified')
           AS verified_visits,
       (SELECT count(*) FROM records r WHERE r.firm_id = f.id AND r.verdict <> 'verified')
           AS flagged_records,
       (SELECT count(*) FROM overdue o WHERE o.firm_id = f.id) AS overdue_elevators,
       (SELECT count(DISTINCT x.device_id) FROM escalations x
         WHERE x.firm_id = f.id AND x.kind = 'escalation.transition'
           AND x.to_state IN ('locked_out', 'lockout_recommended')) AS lockouts,
       (SELECT count(*) FROM escalations x
         WHERE x.firm_id = f.id AND x.kind = 'escalation.override') AS overrides,
       (SELECT count(*) FROM incidents i WHERE i.firm_id = f.id) AS entrapments,
       (SELECT avg(CASE WHEN i.in_time THEN 1.0 ELSE 0.0 END)::float8 FROM incidents i
         WHERE i.firm_id = f.id) AS entrapments_within_deadline,
       (SELECT count(*) FROM rescue_drills r JOIN scoped s ON s.id = r.device_id
         WHERE s.firm_id = f.id AND r.held_at >= s.lo AND r.held_at < s.hi) AS drills
FROM maintenance_firms f
JOIN (SELECT firm_id, count(*) AS elevators FROM scoped GROUP BY firm_id) e ON e.firm_id = f.id
ORDER BY f.id
"""


async def monthly_firm_report(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    month: date,
) -> list[MonthlyFirmRow]:
    """Rule A4: per firm, the month's maintenance, escalation, rescue and drill figures over
    the elevators in ``scope`` (a regulator: its jurisdiction; a firm: its own), and its work
    orders, complaints and callbacks over every asset in scope."""
    first, after = month_bounds(month)
    query = sql.SQL(_MONTHLY).format(scope=scope)
    params = {
        **scope_params,
        "first": first,
        "after": after,
        "month": first,
        "overdue_states": list(OVERDUE_STATES),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    work = await workorders.monthly_work(
        conn, scope=scope, scope_params=scope_params, first=first, after=after
    )
    return [
        MonthlyFirmRow(
            **row,
            on_time_maintenance_rate=(
                1 - row["overdue_elevators"] / row["elevators"] if row["elevators"] else None
            ),
            **(
                work[row["firm_id"]].model_dump(exclude={"firm_id"})
                if row["firm_id"] in work
                else {}
            ),
        )
        for row in rows
    ]


async def devices_in_scope(
    conn: psycopg.AsyncConnection, *, scope: sql.Composable, scope_params: dict[str, Any]
) -> set[str]:
    """Ids of the elevators in ``scope`` (rule A2)."""
    query = sql.SQL("SELECT d.id FROM devices d WHERE d.kind = 'elevator' AND ({})").format(scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, scope_params)
        return {row["id"] for row in await cur.fetchall()}
