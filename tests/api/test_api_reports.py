"""KPI reports: rescue KPIs (rule R7) and the monthly firm report (rule A4), JSON and CSV."""

from __future__ import annotations

import csv
import io

from tests.api.conftest import login
from tests.api.test_api_incidents import SITE, on_call
from tests.api.test_api_maintenance import VISIT, inspection_visit, sweep_overdue, visit_body


def january(client, db_url, db, fleet, clock) -> None:
    """A verified visit on a-el-1, a flagged one on a-el-2, a sweep, and one rescue in time."""
    inspection_visit(db, "a-el-1", VISIT)
    tech = login(client, "tech_a")
    assert client.post("/api/v1/maintenance/records", headers=tech, json=visit_body("a-el-1"))
    disp = login(client, "disp_a")
    body = visit_body("a-el-2", technician_id=fleet.ids["ta1"])
    assert client.post("/api/v1/maintenance/records", headers=disp, json=body).status_code == 201
    sweep_overdue(db_url, db, clock)  # a-el-2 and b-el-1 go overdue; a-el-1 was just verified

    on_call(db_url, fleet, clock)
    incident = client.post("/api/v1/incidents", headers=disp, json={"device_id": "a-el-1"}).json()[
        "incident"
    ]
    base = f"/api/v1/incidents/{incident['id']}"
    client.post(f"{base}/dispatch", headers=disp)
    clock.advance(60)
    client.post(f"{base}/accept", headers=disp)
    clock.advance(900)
    client.post(f"{base}/check-in", headers=disp, json={"latitude": SITE[0], "longitude": SITE[1]})
    clock.advance(300)
    client.post(f"{base}/release", headers=disp)


def test_monthly_firm_report_counts_over_the_callers_scope(client, db_url, db, fleet, clock):
    january(client, db_url, db, fleet, clock)
    rows = client.get("/api/v1/reports/monthly?month=2026-01", headers=login(client, "admin"))
    assert rows.status_code == 200, rows.text
    by_firm = {r["firm_name"]: r for r in rows.json()}
    firm_a = by_firm["Firm A"]
    assert firm_a["elevators"] == 2
    assert firm_a["verified_visits"] == 1 and firm_a["flagged_records"] == 1
    assert firm_a["overdue_elevators"] == 1 and firm_a["on_time_maintenance_rate"] == 0.5
    assert firm_a["entrapments"] == 1 and firm_a["entrapments_within_deadline"] == 1.0
    assert by_firm["Firm B"]["overdue_elevators"] == 1
    assert by_firm["Firm B"]["on_time_maintenance_rate"] == 0.0

    # rule A2: each caller sees the firms over its own elevators
    j2 = client.get("/api/v1/reports/monthly?month=2026-01", headers=login(client, "reg_j2"))
    assert [r["firm_name"] for r in j2.json()] == ["Firm B"]
    firm_b = client.get("/api/v1/reports/monthly?month=2026-01", headers=login(client, "disp_b"))
    assert [r["firm_name"] for r in firm_b.json()] == ["Firm B"]
    # a month with nothing: the fleet, and zeros
    empty = client.get("/api/v1/reports/monthly?month=2025-06", headers=login(client, "disp_a"))
    assert empty.json()[0]["verified_visits"] == 0

    exported = client.get(
        "/api/v1/reports/monthly?month=2026-01&format=csv", headers=login(client, "reg_j1")
    )
    assert exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["firm_name"], r["verified_visits"]) for r in table] == [("Firm A", "1")]


def test_rescue_kpis_per_firm_region_and_month(client, db_url, db, fleet, clock):
    january(client, db_url, db, fleet, clock)
    rows = client.get("/api/v1/reports/rescue-kpis", headers=login(client, "disp_a")).json()
    assert len(rows) == 1
    row = rows[0]
    assert row["month"] == "2026-01-01" and row["firm_name"] == "Firm A"
    assert row["incidents"] == 1
    assert row["answered_within_3_min"] == 1.0  # accepted after a minute (rule R7)
    assert row["arrived_within_deadline"] == 1.0
    assert row["mean_arrival_min"] == 16.0 and row["mean_release_min"] == 21.0

    assert client.get("/api/v1/reports/rescue-kpis", headers=login(client, "disp_b")).json() == []
    assert client.get("/api/v1/reports/rescue-kpis", headers=login(client, "reg_j2")).json() == []
    csv_text = client.get(
        "/api/v1/reports/rescue-kpis?format=csv", headers=login(client, "reg_j1")
    ).text
    assert csv_text.splitlines()[0].startswith("firm_id,firm_name,jurisdiction_id,month")
    assert len(csv_text.splitlines()) == 2
    refused = client.get("/api/v1/reports/rescue-kpis", headers=login(client, "safety_u1"))
    assert refused.status_code == 403


def test_bad_report_requests(shared_client):
    client = shared_client
    headers = login(client, "admin")
    assert client.get("/api/v1/reports/monthly?month=2026-13", headers=headers).status_code == 422
    assert client.get("/api/v1/reports/monthly?format=xls", headers=headers).status_code == 422
    response = client.get("/api/v1/reports/rescue-kpis?first=2026-05&last=2026-01", headers=headers)
    assert response.status_code == 400 and "after" in response.json()["detail"]


def test_a_lift_still_overdue_from_last_month_counts_against_this_months_rate(
    client, db_url, db, fleet, clock
):
    # rule A4: every lift overdue at any time in the month, not only those that became overdue
    # in it; months are read at the site (Shanghai)
    from datetime import UTC, datetime

    import psycopg
    from psycopg.rows import dict_row

    from compliance.maintenance import flows as maintenance_flows
    from fleet.factory import FleetFactory

    registry = FleetFactory(db, at=clock.now())
    for device in ("a-el-1", "a-el-2", "a-em-1", "b-el-1"):  # the whole seeded fleet
        registry.update("devices", device, registered_at=datetime(2025, 11, 1, tzinfo=UTC))
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        # overdue from 20 December; nothing changes in January
        maintenance_flows.sweep(conn, now=datetime(2025, 12, 20, 2, 0, tzinfo=UTC))
    headers = login(client, "admin")
    january = {
        r["firm_name"]: r
        for r in client.get("/api/v1/reports/monthly?month=2026-01", headers=headers).json()
    }
    assert january["Firm A"]["overdue_elevators"] == 2
    assert january["Firm A"]["on_time_maintenance_rate"] == 0.0
    december = {
        r["firm_name"]: r
        for r in client.get("/api/v1/reports/monthly?month=2025-12", headers=headers).json()
    }
    assert december["Firm A"]["overdue_elevators"] == 2
    november = client.get("/api/v1/reports/monthly?month=2025-11", headers=headers).json()
    assert all(r["overdue_elevators"] == 0 for r in november)
    # a year 0 month is refused, not a server error
    assert client.get("/api/v1/reports/monthly?month=0000-01", headers=headers).status_code == 422
