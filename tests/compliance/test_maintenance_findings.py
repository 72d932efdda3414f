"""Rules M8 (drills), M10 (qualification expiry warnings) and M11 (in-car alarm self-test)."""

from __future__ import annotations

from datetime import date, timedelta

from alerts import service as alerts
from compliance.log import service as log_service
from compliance.maintenance import flows, service


def _kinds(conn, subject_type):
    return sorted(
        (f["rule"], f["kind"], f["subject_id"])
        for f in service.open_findings(conn, subject_type=subject_type)
    )


def _selftest(estate, device, at):
    estate.conn.execute(
        "INSERT INTO device_state (device_id, metric, value, ts) "
        "VALUES (%s, 'alarm_selftest_at', %s, %s) "
        "ON CONFLICT (device_id, metric) DO UPDATE SET value = excluded.value, ts = excluded.ts",
        (device, at.timestamp(), at),
    )


def test_a_missed_in_car_alarm_self_test_is_a_fault_until_the_next_test(estate, clock):
    # rule M11: an automatic test at least every 3 days (EN 81-28)
    _selftest(estate, "lift-1", clock.now())
    flows.check_findings(estate.conn, now=clock.now())
    assert _kinds(estate.conn, "device") == []
    clock.advance(timedelta(hours=71))
    flows.check_findings(estate.conn, now=clock.now())
    assert _kinds(estate.conn, "device") == []
    clock.advance(timedelta(hours=2))
    opened, _ = flows.check_findings(estate.conn, now=clock.now())
    assert opened == 1
    assert _kinds(estate.conn, "device") == [("M11", "alarm_selftest_missed", "lift-1")]
    alarm = alerts.open_alarm(
        estate.conn, source_type="device", source_id="lift-1", type="m11.alarm_selftest_missed"
    )
    assert alarm is not None and alarm.severity == "major"
    assert flows.check_findings(estate.conn, now=clock.now()) == (0, 0)  # idempotent
    _selftest(estate, "lift-1", clock.now())
    assert flows.check_findings(estate.conn, now=clock.now()) == (0, 1)
    assert _kinds(estate.conn, "device") == []
    assert (
        alerts.open_alarm(
            estate.conn, source_type="device", source_id="lift-1", type="m11.alarm_selftest_missed"
        )
        is None
    )


def test_a_missing_yearly_rescue_drill_is_flagged(estate, clock):
    # rule M8
    _selftest(estate, "lift-1", clock.now() + timedelta(days=400))  # keep M11 quiet
    flows.record_drill(
        estate.conn,
        device_id="lift-1",
        held_at=clock.now(),
        technician_id=estate.technician_id,
        recorded_by="tech-1",
        at=clock.now(),
    )
    clock.advance(timedelta(days=364))
    flows.check_findings(estate.conn, now=clock.now())
    assert _kinds(estate.conn, "device") == []
    clock.advance(timedelta(days=2))
    flows.check_findings(estate.conn, now=clock.now())
    assert _kinds(estate.conn, "device") == [("M8", "drill_missing", "lift-1")]
    [finding] = service.open_findings(estate.conn, subject_type="device")
    assert finding["detail"]["drill_interval_days"] == 365
    flows.record_drill(
        estate.conn,
        device_id="lift-1",
        held_at=clock.now(),
        technician_id=estate.technician_id,
        recorded_by="tech-1",
        at=clock.now(),
    )
    flows.check_findings(estate.conn, now=clock.now())
    assert _kinds(estate.conn, "device") == []
    assert [e.kind for e in log_service.entries(estate.conn, subject_id="lift-1")].count(
        "drill.held"
    ) == 2


def test_expiring_certificates_and_licences_are_warned_30_days_ahead(estate, clock):
    # rule M10
    today = clock.now().date()
    conn = estate.conn
    estate.fleet.update(
        "technicians", estate.technician_id, certificate_expires_on=today + timedelta(days=20)
    )
    late = estate.fleet.technician(
        firm=estate.firm_id,
        name="Zhao",
        certificate_no="CERT-2",
        certificate_expires_on=today - timedelta(days=1),
    )
    estate.fleet.technician(
        firm=estate.firm_id,
        name="Sun",
        certificate_no="CERT-3",
        certificate_expires_on=today + timedelta(days=31),
    )
    estate.fleet.update("firms", estate.firm_id, licence_expires_on=date(2026, 1, 30))
    flows.check_findings(conn, now=clock.now())
    assert _kinds(conn, "technician") == [
        ("M10", "certificate_expired", str(late)),
        ("M10", "certificate_expiring", str(estate.technician_id)),
    ]
    assert _kinds(conn, "firm") == [("M10", "licence_expiring", str(estate.firm_id))]
    clock.advance(timedelta(days=26))  # the licence lapses on 2026-01-30
    flows.check_findings(conn, now=clock.now())
    assert ("M10", "licence_expired", str(estate.firm_id)) in _kinds(conn, "firm")
    assert ("M10", "licence_expiring", str(estate.firm_id)) not in _kinds(conn, "firm")
    assert service.qualified_technicians(conn, firm_id=estate.firm_id, on=clock.now().date()) == []


def test_periodic_inspection_is_warned_30_days_ahead_and_alarmed_when_lapsed(estate, clock):
    # rule M12: the periodic inspection (定期检验) is asked for a month ahead; a lapsed one alarms
    fleet = estate.fleet
    today = clock.now().date()  # 2026-01-05 16:00 in Shanghai
    fleet.update("devices", "lift-1", next_inspection_due=today + timedelta(days=31),
                 registration_code="梯11沪HP0001(19)")  # fmt: skip
    flows.check_findings(estate.conn, now=clock.now())
    assert _kinds(estate.conn, "device") == []
    clock.advance(timedelta(days=2))  # 29 days to go
    flows.check_findings(estate.conn, now=clock.now())
    assert ("M12", "inspection_due", "lift-1") in _kinds(estate.conn, "device")
    warned = alerts.open_alarm(
        estate.conn, source_type="device", source_id="lift-1", type="m12.inspection_due"
    )
    assert warned is not None and warned.severity == "warning"
    clock.advance(timedelta(days=29))  # the due day itself: still valid
    flows.check_findings(estate.conn, now=clock.now())
    assert ("M12", "inspection_lapsed", "lift-1") not in _kinds(estate.conn, "device")
    clock.advance(timedelta(days=1))
    flows.check_findings(estate.conn, now=clock.now())
    kinds = _kinds(estate.conn, "device")
    assert ("M12", "inspection_lapsed", "lift-1") in kinds
    assert ("M12", "inspection_due", "lift-1") not in kinds
    lapsed = alerts.open_alarm(
        estate.conn, source_type="device", source_id="lift-1", type="m12.inspection_lapsed"
    )
    assert lapsed is not None and lapsed.severity == "critical"
    assert "regulator" in lapsed.audience
    # the inspection is done: the registry gets the next date and the alarm clears
    fleet.at = clock.now()
    fleet.update("devices", "lift-1", next_inspection_due=today + timedelta(days=400))
    flows.check_findings(estate.conn, now=clock.now())
    assert [k for k in _kinds(estate.conn, "device") if k[0] == "M12"] == []
