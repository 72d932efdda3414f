"""Database reads and writes of maintenance compliance (rules M1-M11).

Every write that is a compliance fact appends to the compliance log in the same transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg.types.range import Range

from compliance.log import service as log
from compliance.log.models import canonical_json
from compliance.maintenance.models import (
    DueCommand,
    DueItem,
    Interval,
    Judgement,
    Part,
    Policy,
    Record,
    RecordOut,
    ShardSweep,
    Technician,
    Tier,
    VerdictOut,
)
from vigil import notify
from vigil.catalog import ServiceMode
from vigil.clock import years_before
from vigil.db.rows import columns, first_value

ENGINE_ACTOR = "compliance-engine"

# pg_advisory_xact_lock(class, key) class for per-device maintenance decisions ("MN").
DEVICE_LOCK_CLASS = 0x4D4E

_POLICY_COLUMNS = (
    "half_monthly_days",
    "quarterly_days",
    "semi_annual_days",
    "annual_days",
    "due_soon_days",
    "grace_hours",
    "min_onsite_minutes",
    "evidence_slack_hours",
    "drill_interval_days",
    "selftest_interval_hours",
    "qualification_warning_days",
    "lockout_retry_minutes",
    "override_hours",
)


def as_jsonb(value: Any) -> Jsonb:
    """A jsonb parameter; datetimes become canonical UTC text (as in the compliance log)."""
    return Jsonb(value, dumps=canonical_json)


def lock_device(conn: psycopg.Connection, *, device_id: str) -> None:
    """Serialise maintenance decisions about one elevator until the transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (DEVICE_LOCK_CLASS, device_id))


def policy_sql(now_param: str = "%(now)s") -> str:
    """SELECT of the rule values in force per elevator (contract > jurisdiction > default)."""
    values = ",\n".join(f"coalesce(pc.{c}, pj.{c}, dflt.{c}) AS {c}" for c in _POLICY_COLUMNS)
    return f"""
        SELECT d.id AS device_id, d.site_id, d.firm_id, d.manufacturer_id, d.gateway_id,
               d.registered_at,
               s.user_unit_id, s.timezone AS tz, s.jurisdiction_id, tt.today AS local_today,
               {values},
               coalesce(pc.lockout_mode, pj.lockout_mode, j.lockout_mode) AS lockout_mode
        FROM devices d
        JOIN sites s ON s.id = d.site_id
        JOIN jurisdictions j ON j.id = s.jurisdiction_id
        -- the local date now, converted once per time zone rather than once per elevator
        JOIN (SELECT z.timezone, ({now_param} AT TIME ZONE z.timezone)::date AS today
              FROM (SELECT DISTINCT timezone FROM sites) z) tt ON tt.timezone = s.timezone
        CROSS JOIN (SELECT * FROM compliance_policies
                    WHERE jurisdiction_id IS NULL AND contract_id IS NULL) dflt
        -- the values of the contract in force, where a contract has values of its own: the
        -- few such contracts are joined to the elevators (contracts of a device never
        -- overlap). Looking up every elevator's contract instead cost 0.12 ms a lift (the
        -- planner takes the GiST exclusion index of contracts for it; OFFSET 0 keeps this
        -- a set of its own, computed once, that the planner cannot turn back into that)
        LEFT JOIN (SELECT k.device_id, k.period, p.*
                   FROM compliance_policies p JOIN contracts k ON k.id = p.contract_id
                   OFFSET 0) pc
               ON pc.device_id = d.id AND pc.period @> tt.today
        LEFT JOIN compliance_policies pj ON pj.jurisdiction_id = j.id
        WHERE d.kind = 'elevator' AND d.decommissioned_at IS NULL
    """


def policy_for(conn: psycopg.Connection, *, device_id: str, now: datetime) -> Policy:
    """Rule values in force for one elevator."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT * FROM ({policy_sql()}) p WHERE p.device_id = %(device)s",
            {"now": now, "device": device_id},
        ).fetchone()
    if row is None:
        raise LookupError(f"no elevator {device_id!r} in service")
    return Policy(**{c: row[c] for c in (*_POLICY_COLUMNS, "lockout_mode")})


def set_policy(
    conn: psycopg.Connection,
    *,
    jurisdiction_id: int | None = None,
    contract_id: int | None = None,
    **values: Any,
) -> None:
    """Create or change the policy of a jurisdiction, a contract, or the defaults (both None)."""
    unknown = set(values) - {*_POLICY_COLUMNS, "lockout_mode"}
    if unknown:
        raise ValueError(f"unknown policy values: {', '.join(sorted(unknown))}")
    if jurisdiction_id is None and contract_id is None:
        sets = ", ".join(f"{k} = %({k})s" for k in values)
        conn.execute(
            f"UPDATE compliance_policies SET {sets} "
            "WHERE jurisdiction_id IS NULL AND contract_id IS NULL",
            values,
        )
        return
    scope = "jurisdiction_id" if jurisdiction_id is not None else "contract_id"
    columns = [scope, *values]
    params = {scope: jurisdiction_id if jurisdiction_id is not None else contract_id, **values}
    updates = ", ".join(f"{k} = excluded.{k}" for k in values) or f"{scope} = excluded.{scope}"
    conn.execute(
        f"INSERT INTO compliance_policies ({', '.join(columns)}) "
        f"VALUES ({', '.join(f'%({c})s' for c in columns)}) "
        f"ON CONFLICT ({scope}) DO UPDATE SET {updates}",
        params,
    )


def site_timezone(conn: psycopg.Connection, *, device_id: str) -> str:
    """The time zone of an elevator's site (dates of rules M1 and M10 are read there)."""
    row = conn.execute(
        "SELECT s.timezone FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.id = %s",
        (device_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"no device {device_id!r}")
    return str(first_value(row))


def technician_firm(conn: psycopg.Connection, *, technician_id: int) -> int:
    """Firm of a technician."""
    row = conn.execute("SELECT firm_id FROM technicians WHERE id = %s", (technician_id,)).fetchone()
    if row is None:
        raise LookupError(f"no technician {technician_id}")
    return int(first_value(row))


RECORD_COLUMNS = columns(Record)
RECORD_COLUMNS_OF_R = columns(Record, table="r")


def record(conn: psycopg.Connection, *, record_id: int) -> Record | None:
    """One saved record."""
    with conn.cursor(row_factory=class_row(Record)) as cur:
        return cur.execute(
            f"SELECT {RECORD_COLUMNS} FROM maintenance_records WHERE id = %s", (record_id,)
        ).fetchone()


def insert_record(
    conn: psycopg.Connection,
    *,
    device_id: str,
    technician_id: int,
    firm_id: int,
    tier: Tier,
    claimed_start: datetime,
    claimed_end: datetime,
    checklist_done: Sequence[str],
    checklist_total: int,
    credited_tier: Tier | None,
    parts: Sequence[Part],
    notes: str,
    corrects_id: int | None,
    correction_reason: str | None,
    recorded_by: str,
    at: datetime,
) -> Record:
    """Store a record and log it (rules M2, M4, A1)."""
    with conn.cursor(row_factory=class_row(Record)) as cur:
        saved = cur.execute(
            "INSERT INTO maintenance_records (device_id, technician_id, firm_id, tier, "
            "claimed_start, claimed_end, checklist_done, checklist_total, credited_tier, parts, "
            "notes, corrects_id, correction_reason, recorded_by, recorded_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {RECORD_COLUMNS}",
            (
                device_id,
                technician_id,
                firm_id,
                str(tier),
                claimed_start,
                claimed_end,
                list(checklist_done),
                checklist_total,
                str(credited_tier) if credited_tier else None,
                as_jsonb([p.as_json() for p in parts]),
                notes,
                corrects_id,
                correction_reason,
                recorded_by,
                at,
            ),
        ).fetchone()
    assert saved is not None
    log.append(
        conn,
        kind="maintenance.record",
        subject_type="maintenance_record",
        subject_id=saved.id,
        body={
            "device_id": device_id,
            "technician_id": technician_id,
            "firm_id": firm_id,
            "tier": str(tier),
            "claimed_start": claimed_start,
            "claimed_end": claimed_end,
            "checklist_done": sorted(checklist_done),
            "checklist_total": checklist_total,
            "credited_tier": str(credited_tier) if credited_tier else None,
            "parts": [p.as_json() for p in parts],
            "notes": notes,
            "corrects_id": corrects_id,
            "correction_reason": correction_reason,
        },
        actor=recorded_by,
        at=at,
    )
    return saved


def is_superseded(conn: psycopg.Connection, *, record_id: int) -> bool:
    """True when a later record corrects this one."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM maintenance_records WHERE corrects_id = %s)", (record_id,)
    ).fetchone()
    return bool(row and (row["exists"] if isinstance(row, dict) else row[0]))


def insert_signoff(
    conn: psycopg.Connection,
    *,
    record_id: int,
    user_unit_id: int,
    signed_by: str,
    at: datetime,
) -> None:
    """Store the safety manager's sign-off and log it (rule M4)."""
    conn.execute(
        "INSERT INTO maintenance_signoffs (record_id, user_unit_id, signed_by, signed_at) "
        "VALUES (%s, %s, %s, %s)",
        (record_id, user_unit_id, signed_by, at),
    )
    log.append(
        conn,
        kind="maintenance.signoff",
        subject_type="maintenance_record",
        subject_id=record_id,
        body={"user_unit_id": user_unit_id, "signed_by": signed_by},
        actor=signed_by,
        at=at,
    )


def record_user_unit(conn: psycopg.Connection, *, record_id: int) -> int:
    """User unit owning the site of a record's elevator."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT s.user_unit_id FROM maintenance_records r JOIN devices d ON d.id = r.device_id "
            "JOIN sites s ON s.id = d.site_id WHERE r.id = %s",
            (record_id,),
        ).fetchone()
    if row is None:
        raise LookupError(f"no maintenance record {record_id}")
    return int(row["user_unit_id"])


# Inspection operation (rule M3): the controller's service mode, or either inspection control
# station switched on, which by itself puts a lift in inspection operation (EN 81-20 5.12.1.5).
# A controller that reports its lockout's out-of-service mode over inspection still shows a visit.
INSPECTION_SIGNALS: tuple[tuple[str, float], ...] = (
    ("service_mode", float(ServiceMode.INSPECTION)),
    ("car_top_inspection", 1.0),
    ("pit_inspection", 1.0),
)


def inspection_intervals(
    conn: psycopg.Connection, *, device_id: str, start: datetime, end: datetime
) -> list[Interval]:
    """Inspection-operation intervals of an elevator overlapping [start, end], from events."""
    found: list[Interval] = []
    with conn.cursor(row_factory=dict_row) as cur:
        for metric, on in INSPECTION_SIGNALS:
            found += _on_intervals(
                cur, device_id=device_id, metric=metric, on=on, start=start, end=end
            )
    merged: list[Interval] = []
    for interval in sorted(found, key=lambda i: (i.start, i.end)):
        last = merged[-1] if merged else None
        if last is not None and interval.start <= last.end:
            if interval.end > last.end:
                merged[-1] = Interval(
                    last.start, interval.end, last.start_event_id, interval.end_event_id
                )
        else:
            merged.append(interval)
    return merged


def _on_intervals(
    cur: psycopg.Cursor[dict[str, Any]],
    *,
    device_id: str,
    metric: str,
    on: float,
    start: datetime,
    end: datetime,
) -> list[Interval]:
    """Intervals during which ``metric`` read ``on``, overlapping [start, end]."""
    before = cur.execute(
        "SELECT id, ts, value FROM events WHERE device_id = %s AND metric = %s "
        "AND ts < %s ORDER BY ts DESC LIMIT 1",
        (device_id, metric, start),
    ).fetchone()
    rows = cur.execute(
        "SELECT id, ts, value FROM events WHERE device_id = %s AND metric = %s "
        "AND ts >= %s AND ts <= %s ORDER BY ts",
        (device_id, metric, start, end),
    ).fetchall()
    after = cur.execute(
        "SELECT id, ts, value FROM events WHERE device_id = %s AND metric = %s "
        "AND ts > %s ORDER BY ts LIMIT 1",
        (device_id, metric, end),
    ).fetchone()
    intervals: list[Interval] = []
    opened: tuple[datetime, int | None] | None = None
    if before is not None and before["value"] == on:
        opened = (before["ts"], before["id"])
    for row in rows:
        if row["value"] == on:
            if opened is None:
                opened = (row["ts"], row["id"])
        elif opened is not None:
            intervals.append(Interval(opened[0], row["ts"], opened[1], row["id"]))
            opened = None
    if opened is not None:
        # Still on at the end of the range: it ends at the next change, if known.
        if after is not None:
            intervals.append(Interval(opened[0], after["ts"], opened[1], after["id"]))
        else:
            intervals.append(Interval(opened[0], end, opened[1], None))
    return intervals


def station_events(
    conn: psycopg.Connection, *, device_id: str, start: datetime, end: datetime
) -> dict[str, list[dict[str, Any]]]:
    """Car-top and pit inspection switch-on events in [start, end], and the state at start."""
    found: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for metric in ("car_top_inspection", "pit_inspection"):
            rows = cur.execute(
                "SELECT id, ts, value FROM events WHERE device_id = %s AND metric = %s "
                "AND ts >= %s AND ts <= %s AND value = 1 ORDER BY ts",
                (device_id, metric, start, end),
            ).fetchall()
            before = cur.execute(
                "SELECT id, ts, value FROM events WHERE device_id = %s AND metric = %s "
                "AND ts < %s ORDER BY ts DESC LIMIT 1",
                (device_id, metric, start),
            ).fetchone()
            if before is not None and before["value"] == 1:
                rows.insert(0, before)
            found[metric] = rows
    return found


def overlapping_verified(
    conn: psycopg.Connection,
    *,
    device_id: str,
    start: datetime,
    end: datetime,
    exclude: Sequence[int],
) -> list[int]:
    """Records (in force, not superseded) whose verified inspection interval overlaps
    [start, end) (rule M3: the interval behind the verdict, not the clipped claim)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT v.record_id FROM maintenance_verdicts v
            WHERE v.device_id = %(device)s AND v.verdict = 'verified'
              AND coalesce(v.evidence_span, v.onsite) && tstzrange(%(start)s, %(end)s)
              AND v.record_id <> ALL(%(exclude)s)
              AND NOT EXISTS (SELECT 1 FROM maintenance_verdicts later
                              WHERE later.record_id = v.record_id AND later.id > v.id)
              AND NOT EXISTS (SELECT 1 FROM maintenance_records c
                              WHERE c.corrects_id = v.record_id)
            ORDER BY v.record_id
            """,
            {"device": device_id, "start": start, "end": end, "exclude": list(exclude)},
        ).fetchall()
    return [row["record_id"] for row in rows]


def current_verdict(conn: psycopg.Connection, *, record_id: int) -> dict[str, Any] | None:
    """The verdict in force for a record (its latest), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM maintenance_verdicts WHERE record_id = %s ORDER BY id DESC LIMIT 1",
            (record_id,),
        ).fetchone()


def insert_verdict(
    conn: psycopg.Connection, *, record: Record, judgement: Judgement, at: datetime
) -> int:
    """Store a verdict with its evidence beside it, and log it (rules M3, A1)."""
    onsite = (
        Range(judgement.onsite_start, judgement.onsite_end, "[)")
        if judgement.onsite_start is not None
        else None
    )
    span = (
        Range(judgement.span_start, judgement.span_end, "[)")
        if judgement.span_start is not None
        else None
    )
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO maintenance_verdicts (record_id, device_id, verdict, onsite, "
            "evidence_span, onsite_minutes, evidence, rule_values, decided_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                record.id,
                record.device_id,
                str(judgement.verdict),
                onsite,
                span,
                judgement.onsite_minutes,
                as_jsonb(judgement.evidence),
                as_jsonb(judgement.rule_values),
                at,
            ),
        ).fetchone()
    assert row is not None
    log.append(
        conn,
        kind="maintenance.verdict",
        subject_type="maintenance_record",
        subject_id=record.id,
        body={
            "device_id": record.device_id,
            "verdict": str(judgement.verdict),
            "onsite_start": judgement.onsite_start,
            "onsite_end": judgement.onsite_end,
            "onsite_minutes": round(judgement.onsite_minutes, 3),
            "evidence": judgement.evidence,
            "rule_values": judgement.rule_values,
        },
        actor=ENGINE_ACTOR,
        at=at,
    )
    # announced on commit: work orders turn a visit the telemetry does not prove into work
    notify.send(
        conn,
        notify.MAINTENANCE,
        [
            json.dumps(
                {
                    "verdict_id": row["id"],
                    "record": record.id,
                    "device_id": record.device_id,
                    "verdict": str(judgement.verdict),
                }
            )
        ],
    )
    return int(row["id"])


def purge_records(conn: psycopg.Connection, *, now: datetime, years: int) -> int:
    """Rule A3: delete the maintenance records (with their verdicts and sign-offs) of visits
    that ended more than ``years`` before ``now``, unless a kept record corrects them or a
    signed checkpoint does not cover their history yet; their log entries stay. How many
    records went."""
    expired = sql.SQL(
        "SELECT r.id FROM maintenance_records r WHERE r.claimed_end < %(before)s AND NOT {beyond}"
    ).format(beyond=log.beyond_checkpoint("maintenance_record", sql.SQL("r.id")))
    before = years_before(now, years)
    with conn.transaction():
        log.allow_purge(conn)
        ids = {first_value(row) for row in conn.execute(expired, {"before": before}).fetchall()}
        while ids:  # a record a kept correction names is kept too
            named = conn.execute(
                "SELECT corrects_id FROM maintenance_records "
                "WHERE corrects_id = ANY(%(ids)s) AND NOT id = ANY(%(ids)s)",
                {"ids": list(ids)},
            ).fetchall()
            if not named:
                break
            ids -= {first_value(row) for row in named}
        if ids:
            gone = list(ids)
            conn.execute("DELETE FROM maintenance_verdicts WHERE record_id = ANY(%s)", (gone,))
            conn.execute("DELETE FROM maintenance_signoffs WHERE record_id = ANY(%s)", (gone,))
            conn.execute("DELETE FROM maintenance_records WHERE id = ANY(%s)", (gone,))
    return len(ids)


def failed_verdicts(conn: psycopg.Connection, *, since: datetime) -> list[dict[str, Any]]:
    """Verdicts in force decided since ``since`` that do not prove their visit (rule M3), of
    records not corrected since: ``verdict_id``, ``record_id``, ``device_id``, ``verdict``."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT v.id AS verdict_id, v.record_id, v.device_id, v.verdict "
            "FROM maintenance_verdicts v WHERE v.decided_at >= %s AND v.verdict <> 'verified' "
            "AND v.id = (SELECT max(w.id) FROM maintenance_verdicts w "
            "            WHERE w.record_id = v.record_id) "
            "AND NOT EXISTS (SELECT 1 FROM maintenance_records c "
            "                WHERE c.corrects_id = v.record_id) "
            "ORDER BY v.id",
            (since,),
        ).fetchall()


_CLOCK_COLUMNS = """
    max(visited_at) FILTER (WHERE rank >= 1) AS half_monthly_at,
    max(visited_at) FILTER (WHERE rank >= 2) AS quarterly_at,
    max(visited_at) FILTER (WHERE rank >= 3) AS semi_annual_at,
    max(visited_at) FILTER (WHERE rank >= 4) AS annual_at
"""

# Upsert of clocks from a SELECT ``m`` of (device_id, <tier>_at...) joined to ``tz``.
_UPSERT_CLOCKS = """
    INSERT INTO maintenance_clocks (device_id, half_monthly_at, quarterly_at, semi_annual_at,
                                    annual_at, half_monthly_on, quarterly_on, semi_annual_on,
                                    annual_on, updated_at)
    SELECT m.device_id, m.half_monthly_at, m.quarterly_at, m.semi_annual_at, m.annual_at,
           (m.half_monthly_at AT TIME ZONE s.timezone)::date,
           (m.quarterly_at AT TIME ZONE s.timezone)::date,
           (m.semi_annual_at AT TIME ZONE s.timezone)::date,
           (m.annual_at AT TIME ZONE s.timezone)::date,
           %(at)s
    FROM m JOIN devices d ON d.id = m.device_id JOIN sites s ON s.id = d.site_id
    ON CONFLICT (device_id) DO UPDATE SET
        half_monthly_at = excluded.half_monthly_at, quarterly_at = excluded.quarterly_at,
        semi_annual_at = excluded.semi_annual_at, annual_at = excluded.annual_at,
        half_monthly_on = excluded.half_monthly_on, quarterly_on = excluded.quarterly_on,
        semi_annual_on = excluded.semi_annual_on, annual_on = excluded.annual_on,
        updated_at = excluded.updated_at
"""


def refresh_clocks(conn: psycopg.Connection, *, device_id: str, at: datetime) -> None:
    """Recompute one elevator's due clocks from its verified visits (rules M1, M2)."""
    conn.execute(
        f"""
        WITH m AS (
            SELECT %(device)s::text AS device_id, {_CLOCK_COLUMNS}
            FROM (
                SELECT CASE r.credited_tier WHEN 'half_monthly' THEN 1 WHEN 'quarterly' THEN 2
                                            WHEN 'semi_annual' THEN 3 WHEN 'annual' THEN 4
                       END AS rank,
                       upper(v.onsite) AS visited_at
                FROM maintenance_records r
                JOIN LATERAL (SELECT verdict, onsite FROM maintenance_verdicts
                              WHERE record_id = r.id ORDER BY id DESC LIMIT 1) v ON true
                WHERE r.device_id = %(device)s AND v.verdict = 'verified'
                  AND r.credited_tier IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM maintenance_records c WHERE c.corrects_id = r.id)
            ) credits
        )
        {_UPSERT_CLOCKS}
        """,
        {"device": device_id, "at": at},
    )


def refresh_all_clocks(conn: psycopg.Connection, *, at: datetime) -> int:
    """Recompute every elevator's due clocks from all verified visits, set-based."""
    cur = conn.execute(
        f"""
        WITH m AS (
            SELECT device_id, {_CLOCK_COLUMNS} FROM maintenance_credits GROUP BY device_id
        )
        {_UPSERT_CLOCKS}
        """,
        {"at": at},
    )
    return cur.rowcount


def unjudged_records(
    conn: psycopg.Connection, *, now: datetime, shard: int = 0, shards: int = 1
) -> list[Record]:
    """Records (of the shard's elevators) whose claimed window has ended and that have no
    verdict yet."""
    in_shard = _SHARD_OF_SITE.format(site="d.site_id") + " = %(shard)s"
    with conn.cursor(row_factory=class_row(Record)) as cur:
        return cur.execute(
            # only a record saved before its claimed end can lack a verdict: it waits in
            # maintenance_awaiting_verdict until one is stored (compliance 0216)
            f"SELECT {RECORD_COLUMNS_OF_R} FROM maintenance_awaiting_verdict w "
            "JOIN maintenance_records r ON r.id = w.record_id "
            "JOIN devices d ON d.id = r.device_id "
            "WHERE w.claimed_end <= %(now)s "
            f"AND (%(shards)s::int = 1 OR {in_shard}) "
            "ORDER BY r.id",
            {"now": now, "shard": shard, "shards": shards},
        ).fetchall()


def unsettled_records(conn: psycopg.Connection, *, device_id: str, now: datetime) -> list[Record]:
    """Records of an elevator not verified yet, still inside their evidence slack after the end."""
    with conn.cursor(row_factory=class_row(Record)) as cur:
        return cur.execute(
            f"""
            SELECT {RECORD_COLUMNS_OF_R} FROM maintenance_records r
            JOIN LATERAL (SELECT verdict, rule_values FROM maintenance_verdicts
                          WHERE record_id = r.id ORDER BY id DESC LIMIT 1) v ON true
            WHERE r.device_id = %(device)s AND v.verdict <> 'verified'
              AND r.claimed_end <= %(now)s
              AND r.claimed_end
                  + make_interval(hours => (v.rule_values->>'evidence_slack_hours')::int)
                  >= %(now)s
              AND NOT EXISTS (SELECT 1 FROM maintenance_records c WHERE c.corrects_id = r.id)
            ORDER BY r.id
            """,
            {"device": device_id, "now": now},
        ).fetchall()


def new_command_id(prefix: str) -> str:
    """A command id that fits the topic-id pattern."""
    return f"{prefix}-{uuid.uuid4().hex}"


def insert_command(
    conn: psycopg.Connection,
    *,
    device_id: str,
    action: str,
    reason: str,
    at: datetime,
    repeat_minutes: int | None,
) -> str:
    """Store a lockout or release command and queue it for publishing (rule M6)."""
    command_id = new_command_id(action)
    conn.execute(
        "INSERT INTO commands (id, device_id, action, reason, issued_by, issued_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (command_id, device_id, action, reason, ENGINE_ACTOR, at),
    )
    conn.execute(
        "INSERT INTO compliance_outbox (command_id, next_publish_at, repeat_minutes) "
        "VALUES (%s, %s, %s)",
        (command_id, at, repeat_minutes),
    )
    return command_id


def close_outbox(conn: psycopg.Connection, *, command_id: str) -> None:
    """Stop (re)publishing a command."""
    conn.execute("UPDATE compliance_outbox SET done = true WHERE command_id = %s", (command_id,))


def claim_due_commands(conn: psycopg.Connection, *, now: datetime) -> list[DueCommand]:
    """Lock the outbox commands due at ``now`` (others' claims skipped) for this transaction."""
    with conn.cursor(row_factory=class_row(DueCommand)) as cur:
        return cur.execute(
            "SELECT o.command_id, o.repeat_minutes, c.device_id, c.action, c.reason, "
            "d.gateway_id, maintenance_car_is_safe(c.device_id, false) AS car_safe "
            "FROM compliance_outbox o "
            "JOIN commands c ON c.id = o.command_id JOIN devices d ON d.id = c.device_id "
            "WHERE NOT o.done AND o.next_publish_at <= %s ORDER BY o.next_publish_at "
            "FOR UPDATE OF o SKIP LOCKED LIMIT 500",
            (now,),
        ).fetchall()


def next_publication(conn: psycopg.Connection) -> datetime | None:
    """When the next outbox command is due."""
    row = conn.execute(
        "SELECT min(next_publish_at) FROM compliance_outbox WHERE NOT done"
    ).fetchone()
    return first_value(row)


def defer_publication(
    conn: psycopg.Connection, *, command_id: str, now: datetime, minutes: int | None
) -> None:
    """Rule M6: not now (the car is not safe to lock out); try again after ``minutes``."""
    conn.execute(
        "UPDATE compliance_outbox SET next_publish_at = %(now)s "
        "+ make_interval(mins => coalesce(%(minutes)s, 1)) WHERE command_id = %(id)s",
        {"now": now, "minutes": minutes, "id": command_id},
    )


def expedite_lockouts(conn: psycopg.Connection, *, device_ids: Sequence[str], now: datetime) -> int:
    """Bring the deferred lockouts of these lifts forward to now (their car changed)."""
    cur = conn.execute(
        "UPDATE compliance_outbox o SET next_publish_at = %(now)s FROM commands c "
        "WHERE c.id = o.command_id AND c.action = 'lockout' AND NOT o.done "
        "AND c.device_id = ANY(%(devices)s) AND o.next_publish_at > %(now)s",
        {"now": now, "devices": list(device_ids)},
    )
    return cur.rowcount


def lockouts_pending(conn: psycopg.Connection) -> set[str]:
    """Lifts whose lockout is decided but not yet applied (rule M6)."""
    rows = conn.execute(
        "SELECT device_id FROM maintenance_escalations WHERE state = 'lockout_pending'"
    ).fetchall()
    return {first_value(row) for row in rows}


def due_publications(conn: psycopg.Connection, *, now: datetime) -> list[dict[str, Any]]:
    """Commands to publish now, with the gateway of their device."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT o.command_id, o.repeat_minutes, c.device_id, c.action, c.reason, "
            "c.issued_at, d.gateway_id FROM compliance_outbox o "
            "JOIN commands c ON c.id = o.command_id JOIN devices d ON d.id = c.device_id "
            "WHERE NOT o.done AND o.next_publish_at <= %s ORDER BY o.next_publish_at",
            (now,),
        ).fetchall()


def mark_published(
    conn: psycopg.Connection, *, command_id: str, at: datetime, repeat_minutes: int | None
) -> None:
    """Record one publication; a repeating command is due again after its interval."""
    conn.execute(
        "UPDATE compliance_outbox SET published_count = published_count + 1, "
        "last_published_at = %(at)s, done = %(once)s, "
        "next_publish_at = %(at)s + make_interval(mins => coalesce(%(repeat)s, 0)) "
        "WHERE command_id = %(id)s",
        {"at": at, "once": repeat_minutes is None, "repeat": repeat_minutes, "id": command_id},
    )


def qualified_technicians(conn: psycopg.Connection, *, firm_id: int, on: date) -> list[Technician]:
    """Active technicians of a licensed firm whose certificate is valid on ``on`` (rule M10)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT t.id, t.firm_id, t.name, t.certificate_no, t.certificate_expires_on, "
            "t.home_latitude, t.home_longitude FROM technicians t "
            "JOIN maintenance_firms f ON f.id = t.firm_id "
            "WHERE t.firm_id = %s AND t.active AND t.certificate_expires_on >= %s "
            "AND f.licence_expires_on >= %s ORDER BY t.id",
            (firm_id, on, on),
        ).fetchall()
    return [Technician(**row) for row in rows]


def is_qualified(conn: psycopg.Connection, *, technician_id: int, on: date) -> bool:
    """True when the technician and its firm are qualified on ``on`` (rule M10)."""
    row = conn.execute(
        "SELECT t.active AND t.certificate_expires_on >= %s AND f.licence_expires_on >= %s "
        "FROM technicians t JOIN maintenance_firms f ON f.id = t.firm_id WHERE t.id = %s",
        (on, on, technician_id),
    ).fetchone()
    if row is None:
        return False
    return bool(next(iter(row.values())) if isinstance(row, dict) else row[0])


def certified_models(conn: psycopg.Connection, *, device_id: str) -> dict[str, str]:
    """Certified model of each safety component of an elevator (rule M9)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT component, model FROM certified_components WHERE device_id = %s", (device_id,)
        ).fetchall()
    return {row["component"]: row["model"] for row in rows}


def open_finding(
    conn: psycopg.Connection,
    *,
    rule: str,
    kind: str,
    subject_type: str,
    subject_id: str,
    detail: dict[str, Any],
    at: datetime,
) -> int | None:
    """Open a finding unless the same one is already open; logs it. Returns its id if new."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO compliance_findings (rule, kind, subject_type, subject_id, opened_at, "
            "detail) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (rule, kind, subject_type, subject_id) WHERE closed_at IS NULL "
            "DO NOTHING RETURNING id",
            (rule, kind, subject_type, subject_id, at, as_jsonb(detail)),
        ).fetchone()
    if row is None:
        return None
    log.append(
        conn,
        kind="finding.opened",
        subject_type=subject_type,
        subject_id=subject_id,
        body={"finding_id": row["id"], "rule": rule, "kind": kind, "detail": detail},
        actor=ENGINE_ACTOR,
        at=at,
    )
    return int(row["id"])


def open_findings(
    conn: psycopg.Connection, *, subject_type: str | None = None, subject_id: str | None = None
) -> list[dict[str, Any]]:
    """Findings still open, optionally for one subject."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM compliance_findings WHERE closed_at IS NULL "
            "AND (%(t)s::text IS NULL OR subject_type = %(t)s) "
            "AND (%(i)s::text IS NULL OR subject_id = %(i)s) ORDER BY id",
            {"t": subject_type, "i": subject_id},
        ).fetchall()


def escalation(conn: psycopg.Connection, *, device_id: str) -> dict[str, Any] | None:
    """The escalation row of one elevator."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM maintenance_escalations WHERE device_id = %s", (device_id,)
        ).fetchone()


# Rule M12: a lift's periodic inspection (定期检验) date, read in the site's days.
_INSPECTED_LIFTS = """FROM devices d JOIN sites s ON s.id = d.site_id
           WHERE d.kind = 'elevator' AND d.decommissioned_at IS NULL
             AND d.next_inspection_due IS NOT NULL"""

# Each check: (rule, kind, subject type, SELECT of subject_id + detail currently in breach).
FINDING_CHECKS: tuple[tuple[str, str, str, str], ...] = (
    (
        "M8",
        "drill_missing",
        "device",
        """SELECT p.device_id AS subject_id,
                  jsonb_build_object('last_drill', dr.last, 'drill_interval_days',
                                     p.drill_interval_days) AS detail
           FROM pol p LEFT JOIN (SELECT device_id, max(held_at) AS last FROM rescue_drills
                                 GROUP BY device_id) dr ON dr.device_id = p.device_id
           WHERE coalesce(dr.last, p.registered_at)
                 + make_interval(days => p.drill_interval_days) < %(now)s""",
    ),
    (
        "M11",
        "alarm_selftest_missed",
        "device",
        """SELECT p.device_id AS subject_id,
                  jsonb_build_object('last_selftest', to_timestamp(st.value),
                                     'selftest_interval_hours', p.selftest_interval_hours)
                      AS detail
           FROM pol p LEFT JOIN device_state st
                ON st.device_id = p.device_id AND st.metric = 'alarm_selftest_at' AND st.good
           WHERE coalesce(to_timestamp(st.value), p.registered_at)
                 + make_interval(hours => p.selftest_interval_hours) < %(now)s""",
    ),
    (
        "M12",
        "inspection_lapsed",
        "device",
        f"""SELECT d.id AS subject_id,
                  jsonb_build_object('next_inspection_due', d.next_inspection_due,
                                     'registration_code', d.registration_code) AS detail
           {_INSPECTED_LIFTS}
             AND d.next_inspection_due < (%(now)s AT TIME ZONE s.timezone)::date""",
    ),
    (
        "M12",
        "inspection_due",
        "device",
        f"""SELECT d.id AS subject_id,
                  jsonb_build_object('next_inspection_due', d.next_inspection_due,
                                     'registration_code', d.registration_code,
                                     'warning_days', %(inspection_days)s::int) AS detail
           {_INSPECTED_LIFTS}
             AND d.next_inspection_due >= (%(now)s AT TIME ZONE s.timezone)::date
             AND d.next_inspection_due
                 < (%(now)s AT TIME ZONE s.timezone)::date + %(inspection_days)s::int""",
    ),
    (
        "M10",
        "certificate_expired",
        "technician",
        """SELECT t.id::text AS subject_id,
                  jsonb_build_object('certificate_no', t.certificate_no,
                                     'expires_on', t.certificate_expires_on) AS detail
           FROM technicians t JOIN ft ON ft.firm_id = t.firm_id
           WHERE t.active AND t.certificate_expires_on < ft.today""",
    ),
    (
        "M10",
        "certificate_expiring",
        "technician",
        """SELECT t.id::text AS subject_id,
                  jsonb_build_object('certificate_no', t.certificate_no,
                                     'expires_on', t.certificate_expires_on,
                                     'warning_days', %(warning_days)s::int) AS detail
           FROM technicians t JOIN ft ON ft.firm_id = t.firm_id
           WHERE t.active AND t.certificate_expires_on >= ft.today
             AND t.certificate_expires_on < ft.today + %(warning_days)s::int""",
    ),
    (
        "M10",
        "licence_expired",
        "firm",
        """SELECT f.id::text AS subject_id,
                  jsonb_build_object('licence_no', f.licence_no,
                                     'expires_on', f.licence_expires_on) AS detail
           FROM maintenance_firms f JOIN ft ON ft.firm_id = f.id
           WHERE f.licence_expires_on < ft.today""",
    ),
    (
        "M10",
        "licence_expiring",
        "firm",
        """SELECT f.id::text AS subject_id,
                  jsonb_build_object('licence_no', f.licence_no,
                                     'expires_on', f.licence_expires_on,
                                     'warning_days', %(warning_days)s::int) AS detail
           FROM maintenance_firms f JOIN ft ON ft.firm_id = f.id
           WHERE f.licence_expires_on >= ft.today
             AND f.licence_expires_on < ft.today + %(warning_days)s::int""",
    ),
)


# Rule M10: a qualification is valid through its expiry date, read at the sites where the firm
# works; where its sites lie in several zones, the one whose date is furthest on counts (the
# strictest). A firm without sites reads the date in UTC.
FIRM_TODAY_SQL = """
    SELECT f.id AS firm_id,
           coalesce(max((%(now)s AT TIME ZONE s.timezone)::date),
                    (%(now)s AT TIME ZONE 'UTC')::date) AS today
    FROM maintenance_firms f
    LEFT JOIN devices d ON d.firm_id = f.id AND d.decommissioned_at IS NULL
    LEFT JOIN sites s ON s.id = d.site_id
    GROUP BY f.id
"""


def qualification_warning_days(conn: psycopg.Connection) -> int:
    """Days ahead that expiries are warned (rule M10), from the default policy."""
    row = conn.execute(
        "SELECT qualification_warning_days FROM compliance_policies "
        "WHERE jurisdiction_id IS NULL AND contract_id IS NULL"
    ).fetchone()
    return int(first_value(row))


def apply_finding_check(
    conn: psycopg.Connection,
    *,
    key: dict[str, str],
    breach_sql: str,
    now: datetime,
    warning_days: int,
    inspection_days: int,
) -> list[dict[str, Any]]:
    """Open a finding for each subject in breach and close those no longer in it, set-based;
    the rows opened and closed (``change``)."""
    params = {"now": now, "warning_days": warning_days, "inspection_days": inspection_days}
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""
            WITH pol AS ({policy_sql()}),
            ft AS ({FIRM_TODAY_SQL}),
            breach AS ({breach_sql}),
            opened AS (
                INSERT INTO compliance_findings (rule, kind, subject_type, subject_id,
                                                 opened_at, detail)
                SELECT %(rule)s, %(kind)s, %(subject_type)s, b.subject_id, %(now)s, b.detail
                FROM breach b
                ON CONFLICT (rule, kind, subject_type, subject_id) WHERE closed_at IS NULL
                DO NOTHING
                RETURNING id, subject_id, detail, 'opened'::text AS change
            ),
            closed AS (
                UPDATE compliance_findings f SET closed_at = %(now)s
                WHERE f.rule = %(rule)s AND f.kind = %(kind)s
                  AND f.subject_type = %(subject_type)s AND f.closed_at IS NULL
                  AND f.subject_id NOT IN (SELECT subject_id FROM breach)
                RETURNING id, subject_id, detail, 'closed'::text AS change
            )
            SELECT * FROM opened UNION ALL SELECT * FROM closed
            """,
            {**params, **key},
        ).fetchall()


# -- the sweep's statements (decisions in compliance.maintenance.flows) ----------------------

SWEEP_LOCK_KEY = 0x4D53_5750  # (this, shard): one sweep of a shard at a time across engines


def device_kind(conn: psycopg.Connection, *, device_id: str) -> str | None:
    """The kind of a registered device, or None."""
    row = conn.execute("SELECT kind FROM devices WHERE id = %s", (device_id,)).fetchone()
    return None if row is None else str(first_value(row))


def announce_record(conn: psycopg.Connection, *, device_id: str) -> None:
    """Tell listeners (at commit) that a maintenance record of ``device_id`` was saved."""
    conn.execute(
        "SELECT pg_notify(%s, %s)", (notify.MAINTENANCE, json.dumps({"device": device_id}))
    )


def announce_transitions(conn: psycopg.Connection, *, payloads: Sequence[str]) -> None:
    """Tell listeners (at commit) of escalation transitions, one notice each."""
    conn.execute(
        # binary: the text format would quote and escape every character of every payload
        "SELECT pg_notify(%s, payload) FROM unnest(%b::text[]) AS payload",
        (notify.ESCALATIONS, list(payloads)),
    )


FINDINGS_LOCK_KEY = 0x4D53_4644  # one findings check (M8, M10-M12) at a time across engines
# a site's shard, in SQL: the same cut for every engine (the shard count is the database's)
SITE_BUCKETS = 4096  # a shard is the buckets b with b mod shards = shard (compliance 0215)
# the same cut as the stored site_bucket columns of 0215; sweep.sql's shard filter is this one
_SHARD_OF_SITE = "mod(mod(abs(hashtext({site}::text)), " + str(SITE_BUCKETS) + "), %(shards)s::int)"


def without_jit(conn: psycopg.Connection) -> None:
    """For the rest of this transaction, run statements without JIT compilation: once a
    statement's estimated cost passes ``jit_above_cost``, PostgreSQL compiles it anew at each
    execution (600 ms of the sweep statement's 660 ms at 100,000 lifts)."""
    conn.execute("SELECT set_config('jit', 'off', true)")


def try_shard_locks(conn: psycopg.Connection, *, shards: Iterable[int]) -> bool:
    """Take the transaction locks of these shards; False (none kept) when an engine holds one."""
    wanted = sorted(set(shards))
    if not wanted:
        return True
    row = conn.execute(
        # all or nothing: on False the caller ends its transaction, which frees those taken
        "SELECT bool_and(pg_try_advisory_xact_lock(%(key)s::int, s)) "
        "FROM unnest(%(shards)s::int[]) AS s",
        {"key": SWEEP_LOCK_KEY, "shards": wanted},
    ).fetchone()
    return bool(first_value(row))


def try_findings_lock(conn: psycopg.Connection) -> bool:
    """Take the findings check's transaction lock; False when another engine holds it."""
    row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (FINDINGS_LOCK_KEY,)).fetchone()
    return bool(first_value(row))


def sweep_shards(conn: psycopg.Connection) -> tuple[int, int]:
    """How many shards the fleet is cut into, and the current generation of full sweeps."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT shards, generation FROM maintenance_sweep_state").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def set_sweep_shards(conn: psycopg.Connection, *, shards: int) -> None:
    """Cut the fleet into ``shards`` shards (every shard's next sweep is then a full one)."""
    conn.execute(
        "UPDATE maintenance_sweep_state SET shards = %s, generation = generation + 1", (shards,)
    )


def shards_of(conn: psycopg.Connection, *, device_ids: Sequence[str], shards: int) -> set[int]:
    """The shards holding these devices."""
    rows = conn.execute(
        f"SELECT DISTINCT {_SHARD_OF_SITE.format(site='site_id')} FROM devices "
        "WHERE id = ANY(%(devices)s::text[])",
        {"devices": list(device_ids), "shards": shards},
    ).fetchall()
    return {int(first_value(r)) for r in rows}


def shard_sweep(conn: psycopg.Connection, *, shard: int, shards: int) -> ShardSweep | None:
    """When this shard was last swept, and last fully; None if never."""
    with conn.cursor(row_factory=class_row(ShardSweep)) as cur:
        return cur.execute(
            "SELECT swept_at, full_swept_at, full_generation FROM maintenance_sweep_shards "
            "WHERE shards = %s AND shard = %s",
            (shards, shard),
        ).fetchone()


def mark_shard_swept(
    conn: psycopg.Connection,
    *,
    shard: int,
    shards: int,
    at: datetime,
    full_generation: int | None,
) -> None:
    """Record a sweep of the shard (a full one when ``full_generation`` is given)."""
    conn.execute(
        "INSERT INTO maintenance_sweep_shards AS m "
        "    (shards, shard, swept_at, full_swept_at, full_generation) "
        "VALUES (%(shards)s, %(shard)s, %(at)s, %(at)s, coalesce(%(generation)s, 0)) "
        "ON CONFLICT (shards, shard) DO UPDATE SET swept_at = excluded.swept_at, "
        "full_swept_at = CASE WHEN %(generation)s::bigint IS NULL THEN m.full_swept_at "
        "                     ELSE excluded.full_swept_at END, "
        "full_generation = coalesce(%(generation)s, m.full_generation)",
        {"shards": shards, "shard": shard, "at": at, "generation": full_generation},
    )


def due_for_check(conn: psycopg.Connection, *, now: datetime, shard: int, shards: int) -> list[str]:
    """The shard's elevators an incremental sweep examines: those whose timer has run out, and
    those queued for a recheck (claimed here: a change committed later queues them again). Both
    rows carry the site, so only the rows due are read (compliance 0215)."""
    # the shard's buckets of sites: each claim and timer read from an index by bucket
    params = {
        "now": now,
        "shard": shard,
        "shards": shards,
        "buckets": list(range(shard, SITE_BUCKETS, shards)),
    }
    claimed = conn.execute(
        # a queued elevator without a site is claimed by any shard, and dropped: none sweeps it
        "DELETE FROM maintenance_recheck "
        "WHERE site_bucket = ANY(%(buckets)s::int[]) OR site_bucket IS NULL "
        "RETURNING device_id",
        params,
    ).fetchall()
    timed = conn.execute(
        "SELECT device_id FROM maintenance_escalations "
        "WHERE site_bucket = ANY(%(buckets)s::int[]) AND next_check_at <= %(now)s",
        params,
    ).fetchall()
    found = sorted({str(first_value(r)) for r in [*claimed, *timed]})
    if not found:
        return found
    # by the site the elevator is at now: one queued just before a move is the new shard's (the
    # move queued it there too)
    current = conn.execute(
        f"SELECT d.id FROM devices d WHERE d.id = ANY(%(found)s::text[]) "
        f"AND {_SHARD_OF_SITE.format(site='d.site_id')} = %(shard)s ORDER BY d.id",
        params | {"found": found},
    ).fetchall()
    return [str(first_value(r)) for r in current]


@cache
def _sweep_sql() -> str:
    text = resources.files("compliance.maintenance").joinpath("sweep.sql").read_text("utf-8")
    shard_of_site = _SHARD_OF_SITE.format(site="p.site_id")
    return text.replace("{{policy}}", policy_sql()).replace("{{shard_of_site}}", shard_of_site)


def escalation_moves(
    conn: psycopg.Connection,
    *,
    now: datetime,
    device_ids: Sequence[str] | None,
    shard: int = 0,
    shards: int = 1,
) -> list[dict[str, Any]]:
    """Move the escalation state of every elevator of the shard (or of those given) on,
    set-based (sweep.sql); one row per transition."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            _sweep_sql(),
            {
                "now": now,
                "devices": list(device_ids) if device_ids is not None else None,
                "shard": shard,
                "shards": shards,
            },
            # never prepared: after five runs PostgreSQL may keep one generic plan for every list
            # of elevators, one that reads the whole fleet to keep a few hundred (770 ms a shard
            # at 100,000 lifts; 55 ms planned for the list)
            prepare=False,
        ).fetchall()


def escalation_count(conn: psycopg.Connection) -> int:
    """Elevators with an escalation state."""
    return int(first_value(conn.execute("SELECT count(*) FROM maintenance_escalations").fetchone()))


def set_lockout_command(
    conn: psycopg.Connection, *, device_id: str, command_id: str, at: datetime
) -> None:
    """Record the lockout command sent for an elevator (rule M6)."""
    conn.execute(
        "UPDATE maintenance_escalations SET lockout_command_id = %s, "
        "lockout_issued_at = %s, release_command_id = NULL WHERE device_id = %s",
        (command_id, at, device_id),
    )


def set_release_command(conn: psycopg.Connection, *, device_id: str, command_id: str) -> None:
    """Record the release command that ends an elevator's lockout (rule M6)."""
    conn.execute(
        "UPDATE maintenance_escalations SET lockout_command_id = NULL, lockout_issued_at = NULL, "
        "release_command_id = %s WHERE device_id = %s",
        (command_id, device_id),
    )


def override_authority(
    conn: psycopg.Connection, *, user_id: int, device_id: str
) -> dict[str, Any] | None:
    """The active user's name, role and jurisdiction, with the elevator's jurisdiction."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT u.username, u.role, u.jurisdiction_id, s.jurisdiction_id AS device_j "
            "FROM users u, devices d JOIN sites s ON s.id = d.site_id "
            "WHERE u.id = %s AND d.id = %s AND u.active",
            (user_id, device_id),
        ).fetchone()


def mark_overridden(conn: psycopg.Connection, *, device_id: str, at: datetime) -> None:
    """An elevator's escalation is overridden from ``at`` (rule M6)."""
    conn.execute(
        "UPDATE maintenance_escalations SET state = 'overridden', previous_state = state, "
        "since = %s WHERE device_id = %s",
        (at, device_id),
    )


def insert_drill(
    conn: psycopg.Connection,
    *,
    device_id: str,
    held_at: datetime,
    technician_id: int | None,
    notes: str,
    recorded_by: str,
    at: datetime,
) -> int:
    """Store a rescue drill (rule M8); its id."""
    row = conn.execute(
        "INSERT INTO rescue_drills (device_id, held_at, technician_id, notes, recorded_by, "
        "recorded_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (device_id, held_at, technician_id, notes, recorded_by, at),
    ).fetchone()
    return int(first_value(row))


# -- scoped reads for the maintenance API (rule A2) -----------------------------------------

DUE_STATES = (
    "due_soon",
    "overdue",
    "lockout_pending",
    "lockout_recommended",
    "locked_out",
    "overridden",
)

_RECORD_SELECT = sql.SQL(
    """SELECT r.id, r.device_id, r.technician_id, t.name AS technician_name, r.firm_id, r.tier,
              r.claimed_start, r.claimed_end, r.checklist_done, r.checklist_total,
              r.credited_tier, r.parts, r.notes, r.corrects_id, r.correction_reason,
              (SELECT c.id FROM maintenance_records c WHERE c.corrects_id = r.id)
                  AS corrected_by_id,
              r.recorded_by, r.recorded_at, v.verdict, v.decided_at AS verdict_at,
              so.signed_by AS signed_off_by, so.signed_at AS signed_off_at
       FROM maintenance_records r
       JOIN devices d ON d.id = r.device_id
       JOIN technicians t ON t.id = r.technician_id
       LEFT JOIN LATERAL (SELECT verdict, decided_at FROM maintenance_verdicts mv
                          WHERE mv.record_id = r.id ORDER BY mv.id DESC LIMIT 1) v ON true
       LEFT JOIN maintenance_signoffs so ON so.record_id = r.id"""
)


async def list_due(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    states: Sequence[str],
    limit: int,
) -> list[DueItem]:
    """Elevators in ``scope`` (a condition over alias ``d``) whose escalation is in ``states``,
    most overdue first (M1, M5, M6)."""
    query = sql.SQL(
        """SELECT e.device_id, d.site_id, s.name AS site_name, d.firm_id, f.name AS firm_name,
                  e.state, e.since, e.overdue_since, e.alarm_at, e.lockout_command_id,
                  coalesce(e.detail -> 'overdue_tiers', '[]'::jsonb) AS overdue_tiers
           FROM maintenance_escalations e
           JOIN devices d ON d.id = e.device_id
           JOIN sites s ON s.id = d.site_id
           LEFT JOIN maintenance_firms f ON f.id = d.firm_id
           WHERE ({}) AND e.state = ANY(%(states)s)
           ORDER BY e.overdue_since NULLS LAST, e.device_id LIMIT %(limit)s"""
    ).format(scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "states": list(states), "limit": limit})
        return [DueItem.model_validate(row) for row in await cur.fetchall()]


async def list_scoped_records(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    device_id: str | None,
    verdict: str | None,
    limit: int,
) -> list[RecordOut]:
    """Records of elevators in ``scope``, newest visit first."""
    params: dict[str, Any] = {**scope_params, "limit": limit}
    where = [sql.SQL("({})").format(scope)]
    if device_id is not None:
        where.append(sql.SQL("r.device_id = %(device)s"))
        params["device"] = device_id
    if verdict is not None:
        where.append(sql.SQL("v.verdict = %(verdict)s"))
        params["verdict"] = verdict
    query = sql.SQL("{} WHERE {} ORDER BY r.claimed_start DESC, r.id DESC LIMIT %(limit)s").format(
        _RECORD_SELECT, sql.SQL(" AND ").join(where)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [RecordOut.model_validate(row) for row in await cur.fetchall()]


async def get_scoped_record(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    record_id: int,
) -> RecordOut | None:
    """One record, or None when missing or outside ``scope``."""
    query = sql.SQL("{} WHERE ({}) AND r.id = %(id)s").format(_RECORD_SELECT, scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "id": record_id})
        row = await cur.fetchone()
    return RecordOut.model_validate(row) if row else None


async def record_verdicts(conn: psycopg.AsyncConnection, *, record_id: int) -> list[VerdictOut]:
    """Every verdict of a record, oldest first (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, verdict, lower(onsite) AS onsite_start, upper(onsite) AS onsite_end,
                      onsite_minutes, evidence, rule_values, decided_at
               FROM maintenance_verdicts WHERE record_id = %s ORDER BY id""",
            (record_id,),
        )
        return [VerdictOut.model_validate(row) for row in await cur.fetchall()]


async def escalation_state(conn: psycopg.AsyncConnection, *, device_id: str) -> str | None:
    """The escalation state of one elevator (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT state FROM maintenance_escalations WHERE device_id = %s", (device_id,)
        )
        row = await cur.fetchone()
    return row["state"] if row else None
