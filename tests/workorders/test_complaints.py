"""Complaints (rules S3, S5): registered, answered within 24 h, analysed, a solution agreed
with follow-up work, the outcome back within 2 working days, tracked to closure."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.api.conftest import login
from tests.workorders.test_lifecycle import AT_SITE
from workorders import flows, service
from workorders.models import (
    Channel,
    ComplaintDeadline,
    ComplaintStatus,
    ComplaintStep,
    Kind,
    Level,
    Party,
    WorkOrderError,
)

# Friday 25 September 2026, 17:00 in Shanghai
FRIDAY_EVENING = datetime(2026, 9, 25, 9, 0, tzinfo=UTC)


def _register(world, at):
    return flows.register_complaint(
        world.conn,
        device_id=world.lift,
        channel=Channel.PHONE,
        complainant="Ms Li, 12th floor",
        contact="138 0000 0000",
        subject="the lift stops with a jolt",
        at=at,
        actor="duty line",
    )


def test_a_complaint_goes_from_register_to_closed_with_its_follow_up_work(world, clock):
    clock.set(FRIDAY_EVENING)
    complaint = _register(world, clock.now())
    # rule S3: answered within 24 h; the outcome by the end of the 2nd working day (Tuesday)
    assert complaint.answer_by == FRIDAY_EVENING + timedelta(hours=24)
    assert complaint.outcome_by == datetime(2026, 9, 29, 16, 0, tzinfo=UTC)
    flows.answer_complaint(
        world.conn, complaint_id=complaint.id, at=clock.advance(3600), actor="d", note="on it"
    )
    flows.analyse_complaint(
        world.conn,
        complaint_id=complaint.id,
        cause="worn brake lining",
        responsible_party=Party.FIRM,
        at=clock.advance(3600),
        actor="d",
    )
    agreed = flows.agree_solution(
        world.conn,
        complaint_id=complaint.id,
        solution="replace the brake lining on Monday",
        follow_up_level=Level.GENERAL,
        at=clock.advance(3600),
        actor="d",
    )
    work = service.get_work_order(world.conn, work_order_id=agreed.work_order_id)
    assert work.kind is Kind.COMPLAINT_FOLLOW_UP and work.origin == "complaint"
    with pytest.raises(WorkOrderError, match="outcome has not gone back"):
        flows.close_complaint(world.conn, complaint_id=complaint.id, at=clock.now(), actor="d")
    flows.send_outcome(
        world.conn, complaint_id=complaint.id, at=clock.advance(3600), actor="d", note="told her"
    )
    with pytest.raises(WorkOrderError, match="not done yet"):
        flows.close_complaint(world.conn, complaint_id=complaint.id, at=clock.now(), actor="d")
    for step in (flows.assign, flows.accept):
        extra = {"actor": "d"} if step is flows.assign else {}
        step(
            world.conn,
            work_order_id=work.id,
            technician_id=world.technician_id,
            at=clock.now(),
            **extra,
        )
    flows.check_in(
        world.conn,
        work_order_id=work.id,
        technician_id=world.technician_id,
        at=clock.now(),
        latitude=AT_SITE[0],
        longitude=AT_SITE[1],
    )
    flows.resolve(world.conn, work_order_id=work.id, at=clock.now(), actor="t")
    closed = flows.close_complaint(world.conn, complaint_id=complaint.id, at=clock.now(), actor="d")
    assert closed.status is ComplaintStatus.CLOSED
    assert service.complaint_breaches(world.conn, complaint_id=complaint.id) == []
    assert [s.step for s in service.complaint_steps(world.conn, complaint_id=complaint.id)] == [
        ComplaintStep.REGISTERED,
        ComplaintStep.ANSWERED,
        ComplaintStep.ANALYSED,
        ComplaintStep.SOLUTION_AGREED,
        ComplaintStep.OUTCOME_SENT,
        ComplaintStep.CLOSED,
    ]


def test_late_answers_and_outcomes_are_breaches_counted_on_the_working_day_calendar(world, clock):
    # Monday is a public holiday here: the outcome is due by the end of Wednesday
    service.set_calendar_day(
        world.conn, jurisdiction_id=world.jurisdiction_id, day=date(2026, 9, 28), working=False
    )
    clock.set(FRIDAY_EVENING)
    complaint = _register(world, clock.now())
    assert complaint.outcome_by == datetime(2026, 9, 30, 16, 0, tzinfo=UTC)
    flows.check_deadlines(world.conn, now=FRIDAY_EVENING + timedelta(hours=24, seconds=1))
    assert service.complaint_breaches(world.conn, complaint_id=complaint.id) == [
        ComplaintDeadline.ANSWER
    ]
    flows.check_deadlines(world.conn, now=datetime(2026, 9, 30, 15, 59, tzinfo=UTC))
    assert len(service.complaint_breaches(world.conn, complaint_id=complaint.id)) == 1
    flows.check_deadlines(world.conn, now=datetime(2026, 9, 30, 16, 1, tzinfo=UTC))
    assert service.complaint_breaches(world.conn, complaint_id=complaint.id) == [
        ComplaintDeadline.ANSWER,
        ComplaintDeadline.OUTCOME,
    ]
    # answered later: the breach stays
    flows.answer_complaint(
        world.conn,
        complaint_id=complaint.id,
        at=datetime(2026, 10, 1, tzinfo=UTC),
        actor="d",
        note="sorry",
    )
    assert len(service.complaint_breaches(world.conn, complaint_id=complaint.id)) == 2


def test_the_complaint_register_over_the_api(client, fleet):
    disp = login(client, "disp_a")
    made = client.post(
        "/api/v1/complaints",
        json={
            "device_id": "a-el-1",
            "channel": "phone",
            "complainant": "Mr Wang",
            "subject": "the doors close too fast",
        },
        headers=disp,
    )
    assert made.status_code == 201, made.text
    path = f"/api/v1/complaints/{made.json()['id']}"
    steps = [
        ("answer", {"note": "we will look"}),
        ("analysis", {"cause": "door speed", "responsible_party": "firm"}),
        ("solution", {"solution": "slow the doors", "follow_up_level": 3}),
        ("outcome", {"note": "told him"}),
    ]
    for action, body in steps:
        answer = client.post(f"{path}/{action}", json=body, headers=disp)
        assert answer.status_code == 200, (action, answer.text)
    refused = client.post(f"{path}/close", json={}, headers=disp)
    assert refused.status_code == 409 and "not done yet" in refused.json()["detail"]
    detail = client.get(path, headers=disp).json()
    assert detail["work_order_id"] is not None and len(detail["steps"]) == 5
    assert client.get(path, headers=login(client, "disp_b")).status_code == 404
    bad = client.post(
        "/api/v1/complaints",
        json={"device_id": "a-el-1", "channel": "pigeon", "complainant": "x", "subject": "y"},
        headers=disp,
    )
    assert bad.status_code == 422
    wrong = client.post(
        f"{path}/analysis", json={"cause": "x", "responsible_party": "moon"}, headers=disp
    )
    assert wrong.status_code == 422


def test_the_monthly_review_lists_last_months_complaints(client, fleet, clock):
    # rule S5: a review of last month's complaints (default: the month before the clock's)
    disp = login(client, "disp_a")
    made = client.post(
        "/api/v1/complaints",
        json={
            "device_id": "a-el-1",
            "channel": "email",
            "complainant": "Ms Zhao",
            "subject": "noise",
        },
        headers=disp,
    ).json()
    client.post(f"/api/v1/complaints/{made['id']}/answer", json={}, headers=disp)
    month = clock.now().strftime("%Y-%m")
    [row] = client.get(f"/api/v1/reports/complaints?month={month}", headers=disp).json()
    assert (row["id"], row["answered_in_time"], row["outcome_in_time"]) == (made["id"], True, False)
    clock.advance(timedelta(days=32))  # next month: the review defaults to the month before
    disp = login(client, "disp_a")  # the session of a month ago has ended
    assert [r["id"] for r in client.get("/api/v1/reports/complaints", headers=disp).json()] == [
        made["id"]
    ]
    assert (
        client.get(
            f"/api/v1/reports/complaints?month={month}", headers=login(client, "disp_b")
        ).json()
        == []
    )
    csv = client.get(f"/api/v1/reports/complaints?month={month}&format=csv", headers=disp).text
    assert csv.splitlines()[0].startswith("id,device_id") and "noise" in csv
