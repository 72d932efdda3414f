"""The defects an independent review of rules M3, M5, M6 and M10 found, each with a test that
failed before. Numbers refer to the items of the safety-path issue."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from alerts import service as alerts
from compliance.log import service as log_service
from compliance.maintenance import flows, scheduled, service
from compliance.maintenance.models import Verdict
from tests.compliance.conftest import PARKED
from tests.compliance.test_maintenance_escalation import _lockout, _state, _verified_visit

H = timedelta(hours=1)


# -- 14. one visit written up as two ------------------------------------------------------------


def test_one_inspection_interval_split_into_two_records_is_a_duplicate(estate, clock):
    # rule M3: judged on the whole inspection interval, not on each record's clipped window
    start, end = estate.visit("lift-1", clock.now() - 3 * H, minutes=60)
    middle = start + timedelta(minutes=30)
    _, first = estate.record("lift-1", start, middle, at=clock.now())
    _, second = estate.record("lift-1", middle, end, at=clock.now())
    assert first.verdict is Verdict.VERIFIED
    assert second.verdict is Verdict.DUPLICATE_VISIT
    assert second.evidence["duplicate_of"]
    # two visits on two different days are two visits
    other_start, other_end = estate.visit("lift-1", clock.now() - 2 * H + timedelta(minutes=5))
    _, third = estate.record("lift-1", other_start, other_end, at=clock.now())
    assert third.verdict is Verdict.VERIFIED


# -- 15. a policy edit never releases a lockout; overrides expire --------------------------------


def test_a_policy_edit_does_not_release_a_lockout(estate, clock):
    # rule M6: only a verified visit or an authorised override releases it
    _lockout(estate, clock)
    service.set_policy(estate.conn, jurisdiction_id=estate.jurisdiction_id, half_monthly_days=60)
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "lockout_pending"
    releases = estate.conn.execute("SELECT * FROM commands WHERE action = 'release'").fetchall()
    assert releases == []
    # a verified visit does release it, logged as such
    _verified_visit(estate, clock)
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "ok"
    [release] = estate.conn.execute("SELECT * FROM commands WHERE action = 'release'").fetchall()
    assert release["reason"] == "M6 verified maintenance"


# -- 16. the platform checks the car itself -------------------------------------------------------


def test_a_lockout_is_recorded_only_when_the_platform_sees_a_safe_car(estate, clock):
    # rule M6: the controller's "done" alone is not enough
    command_id = _lockout(estate, clock)
    estate.car("lift-1", clock.now(), passengers=1, door_state=0)
    estate.conn.execute(
        "INSERT INTO command_results (command_id, outcome, ts) VALUES (%s, 'done', %s)",
        (command_id, clock.now()),
    )
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "lockout_pending"
    estate.car("lift-1", clock.advance(60), **PARKED)
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "locked_out"


def test_a_lockout_is_not_sent_while_somebody_is_in_the_car(estate, clock):
    # rule M6: checked before sending; sent once the car is idle, empty, at a landing
    command_id = _lockout(estate, clock)
    estate.car("lift-1", clock.now(), passengers=1)

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def publish(self, topic: str, payload: bytes | str, *, qos: int = 1) -> bool:
            assert topic.startswith("vigil/v1/cmd/") and qos == 1
            self.sent.append(json.loads(payload)["id"])
            return True

    publisher = Recorder()
    assert scheduled.publish_due(estate.conn, publisher=publisher, now=clock.now()) == 0
    assert publisher.sent == []
    estate.car("lift-1", clock.advance(30), passengers=0, door_state=0)  # empty, doors shut
    assert scheduled.publish_due(estate.conn, publisher=publisher, now=clock.now()) == 0
    service.expedite_lockouts(estate.conn, device_ids=["lift-1"], now=clock.now())
    assert scheduled.publish_due(estate.conn, publisher=publisher, now=clock.now()) == 1
    assert publisher.sent == [command_id]


def test_a_lift_the_platform_cannot_see_is_recommend_only_with_a_finding(estate, clock):
    # rule M6: no car state reported at all: enforcing would be blind
    estate.conn.execute("DELETE FROM device_state WHERE device_id = 'lift-1'")
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    flows.sweep(estate.conn, now=clock.now())
    clock.advance(timedelta(hours=72))
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "lockout_recommended"
    assert estate.conn.execute("SELECT count(*) AS n FROM commands").fetchone()["n"] == 0
    found = service.open_findings(estate.conn, subject_type="device", subject_id="lift-1")
    assert [f["kind"] for f in found if f["rule"] == "M6"] == ["lockout_unverifiable"]


# -- 17. a further tier falling overdue raises its own alarm -------------------------------------


def _overdue_alarms(estate) -> list[str]:
    found = alerts.list_alarms(estate.conn, source_id="lift-1")
    return sorted(a.type for a in found if a.type.startswith("maintenance.overdue"))


def test_a_further_tier_falling_overdue_raises_its_own_alarm(estate, clock):
    # rule M5: half-monthly first, then quarterly while the lift is still overdue
    estate.fleet.update("devices", "lift-1", registered_at=clock.now() - 80 * 24 * H)
    estate.conn.execute(
        "INSERT INTO maintenance_clocks (device_id, half_monthly_on, half_monthly_at, updated_at) "
        "VALUES ('lift-1', NULL, NULL, %s)",
        (clock.now(),),
    )
    service.set_policy(estate.conn, jurisdiction_id=estate.jurisdiction_id, grace_hours=10_000)
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "overdue"
    assert _overdue_alarms(estate) == ["maintenance.overdue"]
    clock.advance(timedelta(days=11))  # registration + 90 days passes: quarterly overdue too
    flows.sweep(estate.conn, now=clock.now())
    assert _state(estate) == "overdue"
    assert _overdue_alarms(estate) == ["maintenance.overdue", "maintenance.overdue.quarterly"]
    # once, not on every sweep; the grace period is not restarted
    flows.sweep(estate.conn, now=clock.advance(H))
    assert _overdue_alarms(estate) == ["maintenance.overdue", "maintenance.overdue.quarterly"]
    [alarm] = alerts.list_alarms(estate.conn, type="maintenance.overdue.quarterly")
    assert alarm.trigger_count == 1
    alarm_at = service.escalation(estate.conn, device_id="lift-1")["alarm_at"]
    assert alarm_at < clock.now() - timedelta(days=11)


# -- 18. qualifications are judged by the site's date ------------------------------------------


def test_qualification_dates_are_read_at_the_site(estate, clock):
    # rule M10: 2026-01-05 17:00 UTC is already 2026-01-06 in Shanghai
    estate.fleet.update(
        "technicians", estate.technician_id, certificate_expires_on=date(2026, 1, 5)
    )
    clock.set(datetime(2026, 1, 5, 17, 0, tzinfo=UTC))
    flows.check_findings(estate.conn, now=clock.now())
    kinds = {f["kind"] for f in service.open_findings(estate.conn, subject_type="technician")}
    assert "certificate_expired" in kinds
    # a visit that began at 23:30 on the 5th in Shanghai was still within the certificate
    start = datetime(2026, 1, 5, 15, 30, tzinfo=UTC)
    estate.visit("lift-1", start, minutes=45)
    record, _ = estate.record("lift-1", start, start + timedelta(minutes=45), at=clock.now())
    flagged = service.open_findings(
        estate.conn, subject_type="maintenance_record", subject_id=str(record.id)
    )
    assert flagged == []
    # ... and one that began at 00:30 on the 6th there was not, though it was the 5th in UTC
    later = datetime(2026, 1, 5, 16, 30, tzinfo=UTC)
    clock.set(later + timedelta(hours=2))
    estate.visit("lift-1", later + timedelta(minutes=50), minutes=30)
    late, _ = estate.record(
        "lift-1", later + timedelta(minutes=50), later + timedelta(minutes=80), at=clock.now()
    )
    [finding] = service.open_findings(
        estate.conn, subject_type="maintenance_record", subject_id=str(late.id)
    )
    assert finding["kind"] == "unqualified_technician"
    assert log_service.entries(estate.conn, kind="finding.opened")
