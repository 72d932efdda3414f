"""Rescue incidents through the API (rules R1-R6): the whole lifecycle, scoped by rule A2."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from psycopg.rows import dict_row

from alerts.service import add_shift, create_roster
from fleet.factory import FleetFactory
from tests.api.conftest import login
from tests.api.test_api_live import subscribe

SITE = (31.2, 121.4)  # where the seeded sites are


def on_call(db_url: str, fleet, clock, technician: str = "ta1") -> None:
    """Put a technician of firm A on call (rule R3), a few kilometres from the site."""
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        FleetFactory(conn, at=clock.now()).update(
            "technicians", fleet.ids[technician], home_latitude=31.22, home_longitude=121.42
        )
        roster = create_roster(conn, firm_id=fleet.ids["firm_a"], name="duty")
        add_shift(
            conn,
            roster_id=roster,
            technician_id=fleet.ids[technician],
            start=clock.now() - timedelta(hours=1),
            end=clock.now() + timedelta(hours=12),
        )


def engine_opens_and_dispatches(db_url: str, clock, device: str = "a-el-1") -> int:
    """What the rescue engine does on an alarm button (rules R1, R4); the incident's id."""
    from compliance.rescue import flows as rescue_flows
    from compliance.rescue.models import Trigger

    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        opened = rescue_flows.report(
            conn, device_id=device, trigger=Trigger.ALARM_BUTTON, at=clock.now(), actor="engine"
        )
        rescue_flows.dispatch_next(
            conn,
            incident_id=opened.incident.id,
            now=clock.now(),
            estimator=rescue_flows.StraightLineEstimator(),
        )
    return opened.incident.id


def test_dispatcher_takes_an_incident_from_report_to_closed(client, db_url, fleet, clock, db):
    on_call(db_url, fleet, clock)
    headers = login(client, "disp_a")
    reported = client.post(
        "/api/v1/incidents", headers=headers, json={"device_id": "a-el-1", "note": "caller: 3F"}
    )
    assert reported.status_code == 201, reported.text
    incident = reported.json()["incident"]
    assert reported.json()["created"] is True
    assert incident["status"] == "reported"
    # rule R2: a city site gets 30 minutes from the report (the fake clock's now)
    assert incident["arrival_deadline"] == "2026-01-05T08:30:00Z"
    # rule R1: a second report attaches to the open incident
    again = client.post("/api/v1/incidents", headers=headers, json={"device_id": "a-el-1"})
    assert again.json()["created"] is False
    assert again.json()["incident"]["id"] == incident["id"]

    base = f"/api/v1/incidents/{incident['id']}"
    dispatched = client.post(f"{base}/dispatch", headers=headers)
    assert dispatched.status_code == 200, dispatched.text
    assert dispatched.json()["status"] == "dispatched"
    assert dispatched.json()["technician_id"] == fleet.ids["ta1"]

    clock.advance(60)
    accepted = client.post(f"{base}/accept", headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"

    far = client.post(
        f"{base}/check-in", headers=headers, json={"latitude": 31.3, "longitude": 121.5}
    )
    assert far.status_code == 409 and "from the site" in far.json()["detail"]
    clock.advance(600)
    here = {"latitude": SITE[0], "longitude": SITE[1]}
    arrived = client.post(f"{base}/check-in", headers=headers, json=here)
    assert arrived.status_code == 200, arrived.text
    assert arrived.json()["status"] == "arrived" and arrived.json()["breached"] is False

    # rule R6: steps go in order only
    early = client.post(f"{base}/close", headers=headers)
    assert early.status_code == 409 and "cannot become closed" in early.json()["detail"]
    assert client.post(f"{base}/release", headers=headers).json()["status"] == "released"
    closed = client.post(f"{base}/close", headers=headers)
    assert closed.json()["status"] == "closed" and closed.json()["closed_at"]

    detail = client.get(base, headers=headers).json()
    assert [s["step"] for s in detail["steps"]] == [
        "reported",
        "signal",
        "dispatched",
        "accepted",
        "arrived",
        "released",
        "closed",
    ]
    assert detail["steps"][0]["actor"] == "disp_a"
    alarm = db.execute("SELECT state FROM alarms WHERE id = %s", (detail["alarm_id"],)).fetchone()
    assert alarm["state"] == "cleared"
    assert client.get("/api/v1/incidents", headers=headers).json() == []
    assert len(client.get("/api/v1/incidents?which=all", headers=headers).json()) == 1


def test_incidents_are_scoped_and_regulators_read_only(client, db_url, fleet, clock):
    headers = login(client, "disp_a")
    incident = client.post(
        "/api/v1/incidents", headers=headers, json={"device_id": "a-el-2"}
    ).json()["incident"]
    base = f"/api/v1/incidents/{incident['id']}"

    firm_b = login(client, "disp_b")
    assert client.get(base, headers=firm_b).status_code == 404
    assert client.get("/api/v1/incidents", headers=firm_b).json() == []
    for action in ("dispatch", "accept", "release", "close"):
        response = client.post(f"{base}/{action}", headers=firm_b)
        assert response.status_code == 404, action
        assert response.json() == {"detail": "incident not found"}
    response = client.post("/api/v1/incidents", headers=firm_b, json={"device_id": "a-el-1"})
    assert response.status_code == 404  # cannot report on another firm's lift either

    tech = login(client, "tech_a")  # assigned to a-el-1 only
    assert client.get(base, headers=tech).status_code == 404

    regulator = login(client, "reg_j1")
    assert client.get(base, headers=regulator).json()["status"] == "reported"
    for action in ("dispatch", "accept", "release", "close"):
        assert client.post(f"{base}/{action}", headers=regulator).status_code == 403
    response = client.post(f"{base}/false-alarm", headers=regulator, json={"reason": "x"})
    assert response.status_code == 403

    # the duty line closes it as a false alarm, with a reason (rule R1)
    response = client.post(f"{base}/false-alarm", headers=headers, json={"reason": "test call"})
    assert response.json()["status"] == "false_alarm"
    assert client.post(f"{base}/false-alarm", headers=headers, json={}).status_code == 422


def test_dispatch_without_anyone_on_call_escalates(client, db):
    headers = login(client, "disp_a")
    incident = client.post(
        "/api/v1/incidents", headers=headers, json={"device_id": "a-el-1"}
    ).json()["incident"]
    response = client.post(f"/api/v1/incidents/{incident['id']}/dispatch", headers=headers)
    assert response.status_code == 200  # rule R5: nobody to send: escalated at once
    steps = client.get(f"/api/v1/incidents/{incident['id']}", headers=headers).json()["steps"]
    assert "escalated" in [s["step"] for s in steps]
    assert (
        client.post("/api/v1/incidents", headers=headers, json={"device_id": "a-em-1"}).status_code
        == 409
    )


def test_incident_changes_reach_the_firm_live(running_api, db_url, fleet):
    import httpx

    with subscribe(running_api.url, "disp_a") as firm_a, subscribe(running_api.url, "disp_b") as b:
        with httpx.Client(base_url=running_api.url) as client:
            headers = login(client, "disp_a")
            client.post("/api/v1/incidents", headers=headers, json={"device_id": "a-el-1"})
        seen = firm_a.until("alert")["alert"]
        while seen.get("kind") != "incident":
            seen = firm_a.until("alert")["alert"]
        assert seen["device"] == "a-el-1" and seen["change"] == "reported"
        # firm B hears nothing of it: its next message is about its own lift
        with psycopg.connect(db_url) as conn:
            conn.execute("""SELECT pg_notify('vigil_alerts', '{"kind":"x","device":"b-el-1"}')""")
        assert b.until("alert")["alert"]["device"] == "b-el-1"


def test_bad_rescue_requests_get_a_reason_not_a_server_error(client, db_url, fleet, clock, db):
    # safety review item 12: accepting after the alarm was cleared, checking in as nobody
    on_call(db_url, fleet, clock)
    headers = login(client, "disp_a")
    incident = client.post(
        "/api/v1/incidents", headers=headers, json={"device_id": "a-el-1"}
    ).json()["incident"]
    base = f"/api/v1/incidents/{incident['id']}"
    assert client.post(f"{base}/dispatch", headers=headers).status_code == 200
    # rule R6: an entrapment alarm is not cleared by hand while its incident is open
    cleared = client.post(f"/api/v1/alarms/{incident['alarm_id']}/clear", headers=headers)
    assert cleared.status_code == 409 and "incident" in cleared.json()["detail"]
    clock.advance(30)
    assert client.post(f"{base}/accept", headers=headers).status_code == 200
    nobody = client.post(
        f"{base}/check-in",
        headers=headers,
        json={"technician_id": 999_999, "latitude": SITE[0], "longitude": SITE[1]},
    )
    assert nobody.status_code == 422 and "999999" in nobody.json()["detail"][0]["msg"]
    half = client.post(f"{base}/check-in", headers=headers, json={"latitude": SITE[0]})
    assert half.status_code == 422
    # the duty line records the arrival phoned in: no position, unproven (rule R6)
    arrived = client.post(f"{base}/check-in", headers=headers, json={})
    assert arrived.status_code == 200, arrived.text
    assert arrived.json()["status"] == "arrived" and arrived.json()["arrival_proven"] is False


def test_rescue_coverage_per_elevator_in_the_callers_scope(client, db_url, fleet, clock):
    # rule R8, scoped by rule A2
    on_call(db_url, fleet, clock)
    rows = client.get("/api/v1/reports/coverage", headers=login(client, "disp_a"))
    assert rows.status_code == 200, rows.text
    mine = rows.json()
    assert mine and {r["firm_id"] for r in mine} == {fleet.ids["firm_a"]}
    near = next(r for r in mine if r["device_id"] == "a-el-1")
    assert near["within_deadline"] is True and near["deadline_minutes"] == 30
    assert near["travel_minutes"] > 0
    csv_text = client.get(
        "/api/v1/reports/coverage?format=csv", headers=login(client, "disp_a")
    ).text
    assert csv_text.splitlines()[0].startswith("device_id,firm_id,tier")
