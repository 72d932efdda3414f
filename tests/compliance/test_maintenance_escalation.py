"""Rules M1, M2, M5, M6, M7: due clocks, the escalation state machine, lockout and release."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts import service as alerts
from compliance.log import flows as log_flows
from compliance.log import service as log_service
from compliance.maintenance import flows, service
from compliance.maintenance.models import EscalationState, RecordError, Tier

SHANGHAI = timedelta(hours=8)


def _state(estate, device="lift-1") -> str:
    return service.escalation(estate.conn, device_id=device)["state"]


def _maintenance_alarms(estate, kind="alarm.raised"):
    entries = log_service.entries(estate.conn, kind=kind)
    return [e for e in entries if e.body["type"].startswith("maintenance.")]


def _verified_visit(estate, clock, device="lift-1", tier=Tier.HALF_MONTHLY):
    start, end = estate.visit(device, clock.now() - timedelta(hours=2))
    record, judgement = estate.record(device, start, end, at=clock.now(), tier=tier)
    assert judgement is not None and judgement.verdict == "verified"
    return record, end


def _lockout(estate, clock):
    """Drive lift-1 to lockout_pending; returns the lockout command id."""
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "overdue"
    clock.advance(timedelta(hours=72))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "lockout_pending"
    return service.escalation(estate.conn, device_id="lift-1")["lockout_command_id"]


def test_day_15_is_on_time_and_day_16_is_overdue(estate, clock):
    # rule M1, counted in the site's local days (Asia/Shanghai)
    _, visited = _verified_visit(estate, clock)
    local_day0 = (visited + SHANGHAI).date()
    day15_last_minute = (
        datetime.combine(local_day0 + timedelta(days=15), datetime.max.time(), tzinfo=UTC)
        - SHANGHAI
    ).replace(microsecond=0, second=0)
    clock.set(day15_last_minute)
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "due_soon"  # day 15: still on time (warned 3 days ahead)
    clock.advance(timedelta(minutes=1))  # local midnight: day 16 begins
    result = flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "overdue"
    [transition] = result.transitions
    assert transition.detail["overdue_tiers"] == ["half_monthly"]
    assert transition.detail["rule_values"]["half_monthly_days"] == 15


def test_due_soon_warns_the_configured_days_ahead(estate, clock):
    _, _visited = _verified_visit(estate, clock)
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "ok"
    clock.advance(timedelta(days=11))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "ok"
    clock.advance(timedelta(days=1, hours=12))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "due_soon"


def test_a_quarterly_visit_resets_the_half_monthly_clock(estate, clock):
    # rule M2: a higher tier includes the lower ones
    _verified_visit(estate, clock, tier=Tier.HALF_MONTHLY)
    clock.advance(timedelta(days=10))
    _, quarterly_end = _verified_visit(estate, clock, tier=Tier.QUARTERLY)
    clocks = estate.conn.execute(
        "SELECT * FROM maintenance_clocks WHERE device_id = 'lift-1'"
    ).fetchone()
    assert clocks["half_monthly_at"] == quarterly_end == clocks["quarterly_at"]
    assert clocks["semi_annual_at"] is None
    clock.advance(timedelta(days=14))  # 24 days after the half-monthly, 14 after the quarterly
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) in ("ok", "due_soon")


def test_each_tier_has_its_own_due_date(estate, clock):
    # rule M2: half-monthly visits alone let the quarterly tier fall overdue
    for _ in range(7):
        _verified_visit(estate, clock)
        clock.advance(timedelta(days=14))
    result = flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "overdue"
    assert result.transitions[-1].detail["overdue_tiers"] == ["quarterly"]


def test_an_unverified_visit_does_not_reset_the_clock(estate, clock):
    start = clock.now() - timedelta(hours=2)
    estate.record("lift-1", start, start + timedelta(hours=1), at=clock.now())  # no evidence
    clock.advance(timedelta(days=16))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "overdue"


def test_overdue_alarm_then_lockout_after_the_grace_period(estate, clock):
    # rules M5, M6, M7
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "overdue"
    [alarm] = _maintenance_alarms(estate)
    assert alarm.body["type"] == "maintenance.overdue"
    assert alarm.body["audience"] == ["firm", "user_unit", "manufacturer"]
    assert alarm.body["rule_values"]["half_monthly_days"] == 15
    raised = alerts.open_alarm(
        estate.conn, source_type="device", source_id="lift-1", type="maintenance.overdue"
    )
    assert raised is not None and raised.severity == "major"
    clock.advance(timedelta(hours=71, minutes=59))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "overdue"
    clock.advance(timedelta(minutes=1))
    result = flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "lockout_pending"
    [transition] = result.transitions
    assert transition.detail["rule_values"]["grace_hours"] == 72
    command = estate.conn.execute(
        "SELECT * FROM commands WHERE id = %s", (transition.lockout_command_id,)
    ).fetchone()
    assert command["action"] == "lockout" and command["device_id"] == "lift-1"
    outbox = estate.conn.execute(
        "SELECT * FROM compliance_outbox WHERE command_id = %s", (command["id"],)
    ).fetchone()
    assert not outbox["done"] and outbox["repeat_minutes"] == 5
    logged = log_service.entries(estate.conn, kind="escalation.transition")
    assert [(e.body["from"], e.body["to"]) for e in logged] == [
        ("ok", "overdue"),
        ("overdue", "lockout_pending"),
    ]
    assert logged[-1].body["lockout_command_id"] == command["id"]


def test_every_transition_is_idempotent(estate, clock):
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    assert len(flows.sweep(estate.conn, now=clock.now()).transitions) == 1
    head = log_service.head(estate.conn)
    again = flows.sweep(estate.conn, now=clock.now())
    assert again.transitions == [] and log_service.head(estate.conn) == head
    clock.advance(timedelta(hours=72))
    assert len(flows.sweep(estate.conn, now=clock.now()).transitions) == 1
    assert flows.sweep(estate.conn, now=clock.now()).transitions == []
    assert estate.conn.execute("SELECT count(*) AS n FROM commands").fetchone()["n"] == 1


def test_lockout_stays_pending_while_the_car_moves_or_is_occupied(estate, clock):
    # rule M6: the controller applies the lockout only when safe; until it says so, we wait
    command_id = _lockout(estate, clock)
    conn = estate.conn
    clock.advance(timedelta(minutes=1))
    estate.event("lift-1", "car_status", clock.now(), 1)
    conn.execute(
        "INSERT INTO command_results (command_id, outcome, ts, detail) "
        "VALUES (%s, 'pending_safety', %s, 'car moving')",
        (command_id, clock.now()),
    )
    estate.event("lift-1", "lockout_state", clock.now(), 1)  # LockoutState.PENDING
    flows.sweep(conn, now=clock.now())
    assert _state(estate) == "lockout_pending"
    clock.advance(timedelta(minutes=2))
    estate.event("lift-1", "car_status", clock.now(), 0)
    estate.event("lift-1", "passengers", clock.now(), 1)
    conn.execute(
        "INSERT INTO command_results (command_id, outcome, ts, detail) "
        "VALUES (%s, 'pending_safety', %s, 'passengers inside')",
        (command_id, clock.now()),
    )
    flows.sweep(conn, now=clock.now())
    assert _state(estate) == "lockout_pending"
    clock.advance(timedelta(minutes=2))
    estate.event("lift-1", "passengers", clock.now(), 0)
    estate.event("lift-1", "lockout_state", clock.now(), 2)  # LockoutState.APPLIED
    result = flows.sweep(conn, now=clock.now())
    assert _state(estate) == "locked_out"
    assert result.transitions[0].previous_state is EscalationState.LOCKOUT_PENDING
    # applied: the lockout is no longer re-sent
    assert conn.execute(
        "SELECT done FROM compliance_outbox WHERE command_id = %s", (command_id,)
    ).fetchone()["done"]


def test_a_done_command_result_also_means_locked_out(estate, clock):
    command_id = _lockout(estate, clock)
    estate.conn.execute(
        "INSERT INTO command_results (command_id, outcome, ts) VALUES (%s, 'done', %s)",
        (command_id, clock.now()),
    )
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "locked_out"


def test_a_verified_visit_clears_the_lockout_an_unverified_one_does_not(estate, clock):
    # rules M3, M6
    command_id = _lockout(estate, clock)
    estate.event("lift-1", "lockout_state", clock.now(), 2)
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "locked_out"
    clock.advance(timedelta(hours=3))
    oiling_start, oiling_end = estate.visit(
        "lift-1", clock.now() - timedelta(hours=2), car_top=False, pit=False
    )
    _, judgement = estate.record("lift-1", oiling_start, oiling_end, at=clock.now())
    assert judgement is not None and judgement.verdict == "no_car_top_or_pit"
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "locked_out"
    assert (
        estate.conn.execute(
            "SELECT count(*) AS n FROM commands WHERE action = 'release'"
        ).fetchone()["n"]
        == 0
    )
    clock.advance(timedelta(hours=3))
    _verified_visit(estate, clock)
    result = flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "ok"
    [transition] = result.transitions
    release = estate.conn.execute(
        "SELECT * FROM commands WHERE id = %s", (transition.release_command_id,)
    ).fetchone()
    assert release["action"] == "release" and release["device_id"] == "lift-1"
    assert estate.conn.execute(
        "SELECT done FROM compliance_outbox WHERE command_id = %s", (command_id,)
    ).fetchone()["done"]
    for alarm_type in ("maintenance.overdue", "maintenance.lockout"):
        assert (
            alerts.open_alarm(
                estate.conn, source_type="device", source_id="lift-1", type=alarm_type
            )
            is None
        )
    cleared = _maintenance_alarms(estate, kind="alarm.cleared")
    assert sorted(e.body["type"] for e in cleared) == ["maintenance.lockout", "maintenance.overdue"]
    assert log_flows.verify(estate.conn).ok


def test_recommend_mode_alarms_and_logs_but_sends_no_command(estate, clock):
    # rule M6: some jurisdictions forbid hidden barriers to a lift's operation
    estate.fleet.update("jurisdictions", estate.jurisdiction_id, lockout_mode="recommend")
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16, hours=72))
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(hours=72))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "lockout_recommended"
    assert estate.conn.execute("SELECT count(*) AS n FROM commands").fetchone()["n"] == 0
    alarms = _maintenance_alarms(estate)
    assert [a.body["type"] for a in alarms] == [
        "maintenance.overdue",
        "maintenance.lockout_recommended",
    ]
    assert alarms[-1].body["rule_values"]["lockout_mode"] == "recommend"


def test_a_contract_can_set_its_own_values(estate, clock):
    contract = estate.conn.execute(
        "SELECT id FROM contracts WHERE device_id = 'lift-1'"
    ).fetchone()["id"]  # the one the estate registered the lift under
    service.set_policy(estate.conn, contract_id=contract, grace_hours=24)
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(hours=24))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "lockout_pending"


def test_an_authorised_override_needs_a_reason_and_is_logged(estate, clock):
    # rule M6
    conn = estate.conn
    _lockout(estate, clock)
    admin = conn.execute(
        "INSERT INTO users (username, password_hash, role) VALUES ('root', 'x', 'admin') "
        "RETURNING id"
    ).fetchone()["id"]
    tech = conn.execute(
        "INSERT INTO users (username, password_hash, role, firm_id, technician_id) "
        "VALUES ('wang', 'x', 'technician', %s, %s) RETURNING id",
        (estate.firm_id, estate.technician_id),
    ).fetchone()["id"]
    with pytest.raises(RecordError, match="needs a reason"):
        flows.override_lockout(conn, device_id="lift-1", user_id=admin, reason=" ", at=clock.now())
    with pytest.raises(RecordError, match="may not override"):
        flows.override_lockout(conn, device_id="lift-1", user_id=tech, reason="x", at=clock.now())
    release = flows.override_lockout(
        conn,
        device_id="lift-1",
        user_id=admin,
        reason="hospital lift, visit booked",
        at=clock.now(),
    )
    assert release is not None
    assert _state(estate) == "overridden"
    [entry] = log_service.entries(conn, kind="escalation.override")
    assert entry.body["reason"] == "hospital lift, visit booked" and entry.actor == "root"
    clock.advance(timedelta(hours=23))
    flows.sweep(conn, now=clock.now())
    assert _state(estate) == "overridden"  # no new lockout while overridden
    # rule M6: the override expires after the policy's hours (24 by default), logged, and the
    # lockout resumes while the lift is still not maintained
    clock.advance(timedelta(hours=1))
    flows.sweep(conn, now=clock.now())
    assert _state(estate) == "lockout_pending"
    [expired] = [
        e
        for e in log_service.entries(conn, kind="escalation.transition")
        if e.body["from"] == "overridden"
    ]
    assert expired.body["reason"] == "override expired"
    assert expired.body["rule_values"]["override_hours"] == 24
    _verified_visit(estate, clock)
    flows.sweep(conn, now=clock.now())
    assert _state(estate) == "ok"


def test_state_survives_a_restart_and_two_concurrent_sweeps_decide_once(estate, db_url, clock):
    for n in range(2, 30):
        estate.add_elevator(f"lift-{n}")
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    barrier = threading.Barrier(2)
    results = []

    def run() -> None:
        with psycopg.connect(db_url) as conn:  # a fresh connection: nothing kept in memory
            barrier.wait()
            while True:
                result = flows.sweep(conn, now=clock.now())
                if not result.skipped:
                    results.append(result)
                    return

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(r.transitions) for r in results) == [0, 29]
    alarms = _maintenance_alarms(estate)
    assert len(alarms) == 29
    assert log_flows.verify(estate.conn).ok
