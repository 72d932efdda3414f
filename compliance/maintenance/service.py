"""Database reads and writes of maintenance compliance (rules M1-M11).

Every write that is a compliance fact appends to the compliance log in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg.types.range import Range

from compliance.log import service as log
from compliance.log.models import canonical_json
from compliance.maintenance.models import (
    Interval,
    Judgement,
    Part,
    Policy,
    Record,
    Technician,
    Tier,
)
from vigil.catalog import ServiceMode
from vigil.db.rows import first_value

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
        SELECT d.id AS device_id, d.firm_id, d.manufacturer_id, d.gateway_id, d.registered_at,
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
        LEFT JOIN contracts c ON c.device_id = d.id AND c.period @> tt.today
        LEFT JOIN compliance_policies pc ON pc.contract_id = c.id
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
    return int(row[0] if not isinstance(row, dict) else row["firm_id"])


def record(conn: psycopg.Connection, *, record_id: int) -> Record | None:
    """One saved record."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM maintenance_records WHERE id = %s", (record_id,)
        ).fetchone()
    return _record(row) if row else None


def _record(row: dict[str, Any]) -> Record:
    return Record(
        id=row["id"],
        device_id=row["device_id"],
        technician_id=row["technician_id"],
        firm_id=row["firm_id"],
        tier=Tier(row["tier"]),
        claimed_start=row["claimed_start"],
        claimed_end=row["claimed_end"],
        checklist_done=tuple(row["checklist_done"]),
        checklist_total=row["checklist_total"],
        credited_tier=Tier(row["credited_tier"]) if row["credited_tier"] else None,
        parts=tuple(row["parts"]),
        notes=row["notes"],
        corrects_id=row["corrects_id"],
        correction_reason=row["correction_reason"],
        recorded_by=row["recorded_by"],
        recorded_at=row["recorded_at"],
    )


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
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO maintenance_records (device_id, technician_id, firm_id, tier, "
            "claimed_start, claimed_end, checklist_done, checklist_total, credited_tier, parts, "
            "notes, corrects_id, correction_reason, recorded_by, recorded_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
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
    assert row is not None
    saved = _record(row)
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
    return int(row["id"])


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


def unjudged_records(conn: psycopg.Connection, *, now: datetime) -> list[Record]:
    """Records whose claimed window has ended and that have no verdict yet."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            # only a record saved before its claimed end can lack a verdict (partial index)
            "SELECT r.* FROM maintenance_records r WHERE r.claimed_end > r.recorded_at "
            "AND r.claimed_end <= %s "
            "AND NOT EXISTS (SELECT 1 FROM maintenance_verdicts v WHERE v.record_id = r.id) "
            "ORDER BY r.id",
            (now,),
        ).fetchall()
    return [_record(row) for row in rows]


def unsettled_records(conn: psycopg.Connection, *, device_id: str, now: datetime) -> list[Record]:
    """Records of an elevator not verified yet, still inside their evidence slack after the end."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT r.* FROM maintenance_records r
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
    return [_record(row) for row in rows]


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
