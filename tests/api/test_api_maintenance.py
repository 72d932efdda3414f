"""Maintenance through the API (rules M1-M6), scoped by rule A2; decisions stay in compliance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from compliance.maintenance import flows as maintenance_flows
from compliance.maintenance.models import Tier, checklist
from fleet.factory import FleetFactory
from tests.api.conftest import login

VISIT = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)  # an hour before the fake clock's now


def inspection_visit(db, device: str, start: datetime, minutes: int = 40) -> None:
    """Events of a real visit (rule M3): inspection mode, car-top and pit stations used."""
    events = [
        ("service_mode", start, 2),
        ("car_top_inspection", start + timedelta(minutes=5), 1),
        ("pit_inspection", start + timedelta(minutes=10), 1),
        ("pit_inspection", start + timedelta(minutes=25), 0),
        ("car_top_inspection", start + timedelta(minutes=30), 0),
        ("service_mode", start + timedelta(minutes=minutes), 1),
    ]
    for metric, ts, value in events:
        db.execute(
            "INSERT INTO events (device_id, metric, ts, value) VALUES (%s, %s, %s, %s)",
            (device, metric, ts, value),
        )


def visit_body(device: str, **extra) -> dict:
    """A half-monthly record claiming the visit window."""
    return {
        "device_id": device,
        "tier": "half_monthly",
        "claimed_start": (VISIT - timedelta(minutes=5)).isoformat(),
        "claimed_end": (VISIT + timedelta(minutes=45)).isoformat(),
        "checklist_done": checklist(Tier.HALF_MONTHLY),
        **extra,
    }


def test_technician_records_a_verified_visit_and_safety_manager_signs_it_off(client, db):
    inspection_visit(db, "a-el-1", VISIT)
    tech = login(client, "tech_a")
    created = client.post("/api/v1/maintenance/records", headers=tech, json=visit_body("a-el-1"))
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["verdict"] == "verified"  # rule M3: telemetry proves the visit
    assert record["recorded_by"] == "tech_a"

    safety = login(client, "safety_u1")
    signed = client.post(f"/api/v1/maintenance/records/{record['id']}/sign-off", headers=safety)
    assert signed.status_code == 200, signed.text
    assert signed.json()["signed_off_at"] == "2026-01-05T08:00:00Z"
    again = client.post(f"/api/v1/maintenance/records/{record['id']}/sign-off", headers=safety)
    assert again.status_code == 409  # rule M4: once

    detail = client.get(f"/api/v1/maintenance/records/{record['id']}", headers=tech).json()
    assert [v["verdict"] for v in detail["verdicts"]] == ["verified"]
    assert detail["verdicts"][0]["onsite_minutes"] == 40


def test_record_without_evidence_is_flagged_and_corrected_by_a_new_record(client, db, fleet):
    headers = login(client, "disp_a")
    body = visit_body("a-el-2", technician_id=fleet.ids["ta1"])
    record = client.post("/api/v1/maintenance/records", headers=headers, json=body).json()
    assert record["verdict"] == "no_evidence"

    correction = {k: v for k, v in body.items() if k != "device_id"}
    correction["reason"] = "wrong day entered"
    fixed = client.post(
        f"/api/v1/maintenance/records/{record['id']}/correct", headers=headers, json=correction
    )
    assert fixed.status_code == 201, fixed.text
    assert fixed.json()["corrects_id"] == record["id"]
    old = client.get(f"/api/v1/maintenance/records/{record['id']}", headers=headers).json()
    assert old["corrected_by_id"] == fixed.json()["id"]  # rule M4: the old one is kept as is
    twice = client.post(
        f"/api/v1/maintenance/records/{record['id']}/correct", headers=headers, json=correction
    )
    assert twice.status_code == 409
    flagged = client.get("/api/v1/maintenance/records?verdict=no_evidence", headers=headers).json()
    assert {r["id"] for r in flagged} == {record["id"], fixed.json()["id"]}


def test_bad_records_get_a_message(client, fleet):
    headers = login(client, "disp_a")
    cases = [
        (visit_body("a-el-1"), 400, "technician_id is required"),
        (visit_body("a-em-1", technician_id=fleet.ids["ta1"]), 400, "no elevator"),
        (
            visit_body("a-el-1", technician_id=fleet.ids["ta1"], checklist_done=["Z9.99"]),
            400,
            "unknown checklist items",
        ),
        (
            visit_body(
                "a-el-1",
                technician_id=fleet.ids["ta1"],
                claimed_end=(VISIT - timedelta(hours=1)).isoformat(),
            ),
            400,
            "after claimed_start",
        ),
        ({**visit_body("a-el-1"), "tier": "weekly"}, 422, "half_monthly"),
    ]
    for body, code, message in cases:
        response = client.post("/api/v1/maintenance/records", headers=headers, json=body)
        assert response.status_code == code, (body, response.text)
        assert message in str(response.json()["detail"])


def test_maintenance_is_scoped_by_firm_technician_and_role(client, db, fleet):
    inspection_visit(db, "a-el-1", VISIT)
    tech = login(client, "tech_a")
    record = client.post(
        "/api/v1/maintenance/records", headers=tech, json=visit_body("a-el-1")
    ).json()

    firm_b = login(client, "disp_b")
    url = f"/api/v1/maintenance/records/{record['id']}"
    assert client.get(url, headers=firm_b).status_code == 404
    assert client.get("/api/v1/maintenance/records", headers=firm_b).json() == []
    correction = {**visit_body("a-el-1"), "reason": "x", "technician_id": fleet.ids["ta1"]}
    del correction["device_id"]
    response = client.post(
        f"/api/v1/maintenance/records/{record['id']}/correct", headers=firm_b, json=correction
    )
    assert response.status_code == 404
    # firm B cannot file a record on firm A's lift, nor borrow firm A's technician
    response = client.post(
        "/api/v1/maintenance/records",
        headers=firm_b,
        json=visit_body("a-el-1", technician_id=fleet.ids["ta1"]),
    )
    assert response.status_code == 404
    response = client.post(
        "/api/v1/maintenance/records",
        headers=firm_b,
        json=visit_body("b-el-1", technician_id=fleet.ids["ta1"]),
    )
    assert response.status_code == 404 and response.json() == {"detail": "technician not found"}
    # the technician sees only its assigned lift
    response = client.post("/api/v1/maintenance/records", headers=tech, json=visit_body("a-el-2"))
    assert response.status_code == 404

    # regulators read, never write
    regulator = login(client, "reg_j1")
    assert [r["id"] for r in client.get("/api/v1/maintenance/records", headers=regulator).json()]
    response = client.post(
        "/api/v1/maintenance/records",
        headers=regulator,
        json=visit_body("a-el-1", technician_id=fleet.ids["ta1"]),
    )
    assert response.status_code == 403
    sign = client.post(f"/api/v1/maintenance/records/{record['id']}/sign-off", headers=regulator)
    assert sign.status_code == 403
    count = db.execute("SELECT count(*) AS n FROM maintenance_records").fetchone()
    assert count["n"] == 1


def sweep_overdue(db_url: str, db, clock) -> None:
    """Lifts registered long ago and never maintained: the sweep makes them overdue (M1, M5)."""
    registry = FleetFactory(db, at=clock.now())
    for device in ("a-el-1", "a-el-2", "a-em-1", "b-el-1"):  # the whole seeded fleet
        registry.update("devices", device, registered_at=datetime(2025, 11, 1, tzinfo=UTC))
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        maintenance_flows.sweep(conn, now=clock.now())


def test_due_list_and_lockout_override(client, db_url, db, clock):
    sweep_overdue(db_url, db, clock)
    firm_a = login(client, "disp_a")
    due = client.get("/api/v1/maintenance/due", headers=firm_a).json()
    assert {(d["device_id"], d["state"]) for d in due} == {
        ("a-el-1", "overdue"),
        ("a-el-2", "overdue"),
    }
    assert due[0]["overdue_tiers"]
    assert client.get("/api/v1/maintenance/due?state=late", headers=firm_a).status_code == 400

    # rule M6: the override is an authorised, logged act of the lift's regulator or an admin
    body = {"reason": "inspected by the authority on site"}
    url = "/api/v1/maintenance/lockouts/a-el-2/override"
    assert client.post(url, headers=firm_a, json=body).status_code == 403
    assert client.post(url, headers=login(client, "reg_j2"), json=body).status_code == 404
    done = client.post(url, headers=login(client, "reg_j1"), json=body)
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "overridden"
    again = client.post(url, headers=login(client, "reg_j1"), json=body)
    assert again.status_code == 409
    logged = db.execute(
        "SELECT actor, body FROM compliance_log WHERE kind = 'escalation.override'"
    ).fetchone()
    assert logged["actor"] == "reg_j1"
