"""Rule L4: inspection rounds of street lighting, judged on an injected clock."""

from datetime import UTC, datetime, timedelta

import pytest
from psycopg.rows import class_row

from alerts import service as alerts
from compliance.conditions import service as policies
from compliance.inspections import flows, scheduled
from compliance.inspections.models import MissedRound, RoundError, RoundKind
from compliance.inspections.service import FINDING_COLUMNS
from compliance.log import service as compliance_log
from fleet.factory import FleetFactory
from tests.alerts.harness import Notices, running
from workorders import flows as workorder_flows
from workorders import scheduled as workorders

# Monday 2026-11-02 00:00 in Shanghai (UTC+8)
MONDAY = datetime(2026, 11, 1, 16, 0, tzinfo=UTC)


@pytest.fixture
def world(db):
    factory = FleetFactory(db, at=MONDAY)
    jurisdiction = factory.jurisdiction()
    site = factory.site(jurisdiction=jurisdiction)
    factory.device("pole-1", site=site, kind="light_pole", registered_at=MONDAY)
    return {"factory": factory, "site": site, "jurisdiction": jurisdiction}


def record(db, kind, *, at, site_id=None, device_id=None, **fields):
    return flows.record_round(
        db,
        kind=kind,
        site_id=site_id,
        device_id=device_id,
        performed_at=at,
        technician_id=None,
        measured=fields.get("measured"),
        test_voltage_v=fields.get("test_voltage_v"),
        passed=fields.get("passed"),
        note="",
        recorded_by="tester",
        now=fields.get("now", at),
    )


def of_sections(found):
    return [f for f in found if f.device_id is None]


def flows_findings(db):
    with db.cursor(row_factory=class_row(MissedRound)) as cur:
        return cur.execute(
            f"SELECT {FINDING_COLUMNS} FROM inspection_findings ORDER BY id"
        ).fetchall()


def test_a_week_with_three_patrols_is_a_finding_and_four_is_not(db, world):
    # rule L4: a section without telemetry is patrolled 4 times in each local week
    site = world["site"]
    for day in range(3):
        record(db, RoundKind.PATROL, site_id=site, at=MONDAY + timedelta(days=day, hours=2))
    # the week is not over: nothing is judged yet
    assert of_sections(flows.check_rounds(db, now=MONDAY + timedelta(days=6, hours=23))) == []
    found = of_sections(flows.check_rounds(db, now=MONDAY + timedelta(days=7)))
    assert [(f.kind, f.required, f.done) for f in found] == [(RoundKind.PATROL, 4, 3)]
    assert found[0].period_start == MONDAY and found[0].due_by == MONDAY + timedelta(days=7)
    assert found[0].policy["patrols_per_week"] == 4
    # found once: a second look (a restart) finds nothing new
    assert of_sections(flows.check_rounds(db, now=MONDAY + timedelta(days=7, hours=1))) == []
    # the next week has its four: no finding for it
    for day in range(4):
        record(db, RoundKind.PATROL, site_id=site, at=MONDAY + timedelta(days=7 + day, hours=2))
    assert of_sections(flows.check_rounds(db, now=MONDAY + timedelta(days=14))) == []
    missed = [e.body for e in compliance_log.entries(db) if e.kind == "inspection.missed"]
    assert [b["kind"] for b in missed if b["kind"] == "patrol"] == ["patrol"]


def test_a_patrol_recorded_late_makes_the_short_week_good(db, world):
    site = world["site"]
    for day in range(3):
        record(db, RoundKind.PATROL, site_id=site, at=MONDAY + timedelta(days=day, hours=2))
    [finding] = of_sections(flows.check_rounds(db, now=MONDAY + timedelta(days=7)))
    # Sunday's patrol, written up on Monday
    record(
        db,
        RoundKind.PATROL,
        site_id=site,
        at=MONDAY + timedelta(days=6, hours=3),
        now=MONDAY + timedelta(days=7, hours=2),
    )
    [after] = of_sections(flows_findings(db))
    assert after.id == finding.id and after.resolved_at is not None and after.done == 4


def test_patrols_per_week_is_policy(db, world):
    # a jurisdiction that asks for 2 patrols a week
    policies.set_policy(db, jurisdiction_id=world["jurisdiction"], patrols_per_week=2)
    site = world["site"]
    for day in range(2):
        record(db, RoundKind.PATROL, site_id=site, at=MONDAY + timedelta(days=day, hours=2))
    assert of_sections(flows.check_rounds(db, now=MONDAY + timedelta(days=7))) == []


def test_a_section_under_telemetry_is_reviewed_every_day(db, world):
    # rule L4 (002:L41): a section watched from the control room is reviewed daily; a day
    # without a remote review or patrol is a finding
    factory, site = world["factory"], world["site"]
    factory.gateway("gw-road", site=site)
    factory.device("pole-2", site=site, kind="light_pole", gateway="gw-road", registered_at=MONDAY)
    record(db, RoundKind.REMOTE_REVIEW, site_id=site, at=MONDAY + timedelta(hours=20))
    record(db, RoundKind.PATROL, site_id=site, at=MONDAY + timedelta(days=1, hours=9))
    found = of_sections(flows.check_rounds(db, now=MONDAY + timedelta(days=3)))
    assert [(f.kind, f.period_start) for f in found] == [
        (RoundKind.REMOTE_REVIEW, MONDAY + timedelta(days=2))
    ]


def test_a_device_round_past_its_interval_is_a_finding_and_an_inspection_task(db, world):
    # rule L4: the pole-head box weekly; overdue raises an alarm that becomes an inspection task
    record(db, RoundKind.POLE_BOX, device_id="pole-1", at=MONDAY + timedelta(days=1))
    assert [f for f in flows.check_rounds(db, now=MONDAY + timedelta(days=7)) if f.device_id] == []
    late = MONDAY + timedelta(days=8, hours=1)
    found = [f for f in flows.check_rounds(db, now=late) if f.device_id]
    assert [(f.kind, f.due_by) for f in found] == [(RoundKind.POLE_BOX, MONDAY + timedelta(days=8))]
    alarm = alerts.open_alarm(
        db, source_type="device", source_id="pole-1", type="inspection_missed.pole_box"
    )
    assert alarm is not None and alarm.details["policy"]["pole_box_days"] == 7
    work = workorder_flows.source_of_alarm(alarm)
    assert work is not None and work.kind == "inspection_task"
    # the round done late resolves the finding and clears the alarm
    record(db, RoundKind.POLE_BOX, device_id="pole-1", at=late + timedelta(hours=1))
    assert (
        alerts.open_alarm(
            db, source_type="device", source_id="pole-1", type="inspection_missed.pole_box"
        )
        is None
    )
    assert [f.resolved_at is not None for f in flows_findings(db) if f.device_id] == [True]


def test_cleaning_grounding_insulation_and_calibration_fall_due_on_their_intervals(db, world):
    # rule L4: cleaning every 6 months, the measurements and calibration yearly (from the
    # registration when never done); the weekly box check is kept up
    for week in range(60):
        record(db, RoundKind.POLE_BOX, device_id="pole-1", at=MONDAY + timedelta(weeks=week))
    due = {d.kind: d.due_by for d in flows.due_rounds(db, now=MONDAY, devices=["pole-1"])}
    assert due[RoundKind.CLEANING] == MONDAY + timedelta(days=182)
    assert due[RoundKind.GROUNDING] == MONDAY + timedelta(days=365)
    assert due[RoundKind.INSULATION] == MONDAY + timedelta(days=365)
    assert due[RoundKind.CALIBRATION] == MONDAY + timedelta(days=365)
    found = flows.check_rounds(db, now=MONDAY + timedelta(days=200))
    assert {f.kind for f in found if f.device_id} == {RoundKind.CLEANING}
    found = flows.check_rounds(db, now=MONDAY + timedelta(days=366))
    assert {f.kind for f in found if f.device_id} == {
        RoundKind.GROUNDING,
        RoundKind.INSULATION,
        RoundKind.CALIBRATION,
    }


def test_grounding_over_four_ohm_fails_and_opens_corrective_work(db, world):
    # rule L4: grounding resistance at most 4 ohm
    ok = record(db, RoundKind.GROUNDING, device_id="pole-1", at=MONDAY, measured=3.8)
    assert ok.passed and ok.unit == "ohm" and ok.limits == {"rule": "L4", "max_ohm": 4.0}
    bad = record(db, RoundKind.GROUNDING, device_id="pole-1", at=MONDAY, measured=4.6)
    assert not bad.passed
    alarm = alerts.open_alarm(
        db, source_type="device", source_id="pole-1", type="inspection_failed.grounding"
    )
    assert alarm is not None and alarm.details["measured"] == 4.6
    assert alarm.details["limits"]["max_ohm"] == 4.0
    # the work-order runner turns it into corrective work on the pole
    opened = workorders.take(db, sources=workorders.missed_sources(db, now=MONDAY), now=MONDAY)
    assert opened == 1
    [order] = db.execute("SELECT kind, cause FROM work_orders").fetchall()
    assert (order["kind"], order["cause"]) == ("corrective_work", "inspection_failed.grounding")
    assert "inspection.failed" in [e.kind for e in compliance_log.entries(db)]
    # a later passing measurement clears it
    record(db, RoundKind.GROUNDING, device_id="pole-1", at=MONDAY + timedelta(days=2), measured=2.1)
    assert (
        alerts.open_alarm(
            db, source_type="device", source_id="pole-1", type="inspection_failed.grounding"
        )
        is None
    )


def test_grounding_limit_is_per_device_policy(db, world):
    policies.set_policy(db, device_id="pole-1", grounding_max_ohm=10.0)
    saved = record(db, RoundKind.GROUNDING, device_id="pole-1", at=MONDAY, measured=6.0)
    assert saved.passed and saved.limits["max_ohm"] == 10.0


def test_insulation_is_measured_at_500_volts_and_at_least_half_a_megohm(db, world):
    # rule L4: insulation >= 0.5 Mohm with a 500 V megger
    ok = record(
        db, RoundKind.INSULATION, device_id="pole-1", at=MONDAY, measured=0.5, test_voltage_v=500
    )
    assert ok.passed and ok.limits["min_mohm"] == 0.5
    low = record(
        db, RoundKind.INSULATION, device_id="pole-1", at=MONDAY, measured=0.3, test_voltage_v=500
    )
    assert not low.passed
    with pytest.raises(RoundError, match="500 V"):
        record(
            db, RoundKind.INSULATION, device_id="pole-1", at=MONDAY, measured=2, test_voltage_v=250
        )
    with pytest.raises(RoundError, match="test_voltage_v"):
        record(db, RoundKind.INSULATION, device_id="pole-1", at=MONDAY, measured=2)
    with pytest.raises(RoundError, match="contradicts"):
        record(
            db,
            RoundKind.INSULATION,
            device_id="pole-1",
            at=MONDAY,
            measured=0.1,
            test_voltage_v=500,
            passed=True,
        )


def test_rounds_are_refused_on_the_wrong_subject_or_in_the_future(db, world):
    with pytest.raises(RoundError, match="give site_id"):
        record(db, RoundKind.PATROL, device_id="pole-1", at=MONDAY)
    with pytest.raises(RoundError, match="give device_id"):
        record(db, RoundKind.CLEANING, site_id=world["site"], at=MONDAY)
    with pytest.raises(RoundError, match="future"):
        record(db, RoundKind.CLEANING, device_id="pole-1", at=MONDAY, now=MONDAY - timedelta(1))
    with pytest.raises(RoundError, match="measured"):
        record(db, RoundKind.GROUNDING, device_id="pole-1", at=MONDAY)
    assert [e.kind for e in compliance_log.entries(db)] == []


def test_a_round_is_never_changed(db, world):
    saved = record(db, RoundKind.CLEANING, device_id="pole-1", at=MONDAY)
    with pytest.raises(Exception, match="never changed"):
        db.execute("UPDATE inspection_rounds SET passed = false WHERE id = %s", (saved.id,))


def test_local_periods_are_whole_local_days_and_weeks(db):
    # registered on a Wednesday afternoon (Shanghai): the first judged day is Thursday, the
    # first judged week begins the next Monday
    wednesday = MONDAY + timedelta(days=2, hours=15)
    now = MONDAY + timedelta(days=14)
    days = flows.local_periods(since=wednesday, now=now, timezone="Asia/Shanghai", days=1)
    assert days[0][0] == MONDAY + timedelta(days=3) and days[-1][1] == now
    weeks = flows.local_periods(since=wednesday, now=now, timezone="Asia/Shanghai", days=7)
    assert weeks == [(MONDAY + timedelta(days=7), MONDAY + timedelta(days=14))]


def missed(change, kind="pole_box"):
    def match(notice):
        return (
            isinstance(notice, dict)
            and notice.get("type") == f"inspection_missed.{kind}"
            and notice.get("change") == change
        )

    return match


async def test_the_runner_finds_missed_rounds_at_start_and_when_the_next_falls_due(
    db_url, db, clock, resources_for
):
    # rule L4 on the injected clock: overdue at start, then the next week's box check once the
    # clock passes its due time (the runner sleeps until then)
    start = clock.now()
    site = FleetFactory(db, at=start).site()
    FleetFactory(db, at=start).device(
        "pole-9", site=site, kind="light_pole", registered_at=start - timedelta(days=8)
    )
    async with (
        Notices(db_url) as notices,
        resources_for() as resources,
        running(scheduled.run, resources=resources),
    ):
        await notices.wait(missed("raised"))
        record(db, RoundKind.POLE_BOX, device_id="pole-9", at=clock.now())
        await notices.wait(missed("cleared"))
        clock.advance(timedelta(days=7, seconds=1))
        await notices.wait(missed("raised"), count=2)
    found = [f for f in flows_findings(db) if f.kind == RoundKind.POLE_BOX]
    assert [f.resolved_at is not None for f in found] == [True, False]
