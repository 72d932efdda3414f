"""/api/v1/work-orders: opened by hand, taken through the lifecycle by the firm's people,
scoped by rule A2, bad requests answered with a reason (never a 5xx)."""

from __future__ import annotations

from tests.api.conftest import login

BASE = "/api/v1/work-orders"


def _open(client, headers, **body):
    payload = {
        "device_id": "a-el-1",
        "kind": "fault_repair",
        "level": 2,
        "origin": "phone",
        "title": "the door closes on people",
    } | body
    return client.post(BASE, json=payload, headers=headers)


def test_the_duty_line_opens_work_and_the_firm_takes_it_to_closed(client, fleet):
    disp, tech = login(client, "disp_a"), login(client, "tech_a")
    created = _open(client, disp)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["status"] == "opened" and order["level"] == 2 and order["zone"] == "city"
    again = _open(client, disp, title="another call about the door")
    assert again.status_code == 200 and again.json()["id"] == order["id"]
    assert again.json()["repeats"] == 1
    path = f"{BASE}/{order['id']}"
    steps = [
        ("assign", disp, {"technician_id": fleet.ids["ta1"]}),
        ("accept", tech, {}),
        ("check-in", tech, {"latitude": 31.2, "longitude": 121.4}),
        ("resolve", tech, {"note": "door operator adjusted"}),
        ("callback", disp, {"reached": True, "satisfaction": 5}),
    ]
    for action, who, body in steps:
        answer = client.post(f"{path}/{action}", json=body, headers=who)
        assert answer.status_code == 200, (action, answer.text)
    detail = client.get(path, headers=disp).json()
    assert detail["status"] == "closed"
    assert [s["step"] for s in detail["steps"]] == [
        "opened",
        "repeated",
        "assigned",
        "accepted",
        "on_site",
        "resolved",
        "callback",
        "closed",
    ]
    queue = client.get(BASE, params={"which": "all"}, headers=disp).json()
    assert [o["id"] for o in queue] == [order["id"]]


def test_work_orders_are_scoped_and_regulators_read_only(client, fleet):
    mine = _open(client, login(client, "disp_a")).json()
    other_firm = login(client, "disp_b")
    assert client.get(f"{BASE}/{mine['id']}", headers=other_firm).status_code == 404
    assert client.get(BASE, headers=other_firm).json() == []
    assert _open(client, other_firm).status_code == 404  # not its asset: as if it did not exist
    regulator = login(client, "reg_j1")
    assert [o["id"] for o in client.get(BASE, headers=regulator).json()] == [mine["id"]]
    assert _open(client, regulator).status_code == 403
    assert client.get(BASE, headers=login(client, "reg_j2")).json() == []


def test_bad_requests_get_a_reason_not_a_server_error(client, fleet):
    disp = login(client, "disp_a")
    assert _open(client, disp, level=5).status_code == 422
    assert _open(client, disp, origin="alarm").status_code == 422  # the platform's own
    assert _open(client, disp, kind="painting").status_code == 422
    assert _open(client, disp, unknown="x").status_code == 422
    order = _open(client, disp).json()
    path = f"{BASE}/{order['id']}"
    refused = client.post(f"{path}/resolve", json={}, headers=disp)
    assert refused.status_code == 409 and "cannot become resolved" in refused.json()["detail"]
    unknown = client.post(f"{path}/assign", json={"technician_id": 424242}, headers=disp)
    assert unknown.status_code == 409 and "no technician" in unknown.json()["detail"]
    # only the technician checks in, with its own position
    assert client.post(f"{path}/check-in", json={}, headers=disp).status_code == 403
    assert client.get(f"{BASE}/0", headers=disp).status_code == 422
    assert client.get(f"{BASE}/999999", headers=disp).status_code == 404
    callback = client.post(
        f"{path}/callback", json={"reached": True, "satisfaction": 9}, headers=disp
    )
    assert callback.status_code == 422


def test_customers_not_reached_are_called_again_until_reached(client, fleet, clock):
    # rule S4: due at once after the resolution, again 4 hours after an unreached call
    disp, tech = login(client, "disp_a"), login(client, "tech_a")
    order = _open(client, disp).json()
    path = f"{BASE}/{order['id']}"
    for action, who, body in (
        ("assign", disp, {"technician_id": fleet.ids["ta1"]}),
        ("accept", tech, {}),
        ("check-in", tech, {"latitude": 31.2, "longitude": 121.4}),
    ):
        assert client.post(f"{path}/{action}", json=body, headers=who).status_code == 200
    due = f"{BASE}/callbacks-due"
    assert client.get(due, headers=disp).json() == []  # not resolved yet
    assert client.post(f"{path}/resolve", json={}, headers=tech).status_code == 200
    [waiting] = client.get(due, headers=disp).json()
    assert waiting["work_order_id"] == order["id"] and waiting["attempts"] == 0
    missed = client.post(f"{path}/callback", json={"reached": False}, headers=disp)
    assert missed.status_code == 200 and missed.json()["status"] == "resolved"
    assert client.get(due, headers=disp).json() == []
    clock.advance(4 * 3600)
    [again] = client.get(due, headers=disp).json()
    assert again["attempts"] == 1
    assert client.get(due, headers=login(client, "disp_b")).json() == []
    reached = client.post(
        f"{path}/callback", json={"reached": True, "satisfaction": 2}, headers=disp
    )
    assert reached.json()["status"] == "closed"
    assert client.get(due, headers=disp).json() == []


def test_the_monthly_firm_report_counts_work_complaints_and_callbacks(client, fleet, clock):
    # rule A4: work orders by level within their deadlines, repeat faults (S5), complaints
    # answered in time (S3), callbacks and satisfaction (S4)
    disp, tech = login(client, "disp_a"), login(client, "tech_a")
    first = _open(client, disp, level=1, cause="safety-circuit").json()
    second = _open(client, disp, level=3, device_id="a-el-2", cause="noise").json()
    clock.advance(600)  # the level-1 order missed its 5-minute response
    for action, who, body in (
        ("assign", disp, {"technician_id": fleet.ids["ta1"]}),
        ("accept", tech, {}),
        ("check-in", tech, {"latitude": 31.2, "longitude": 121.4}),
        ("resolve", tech, {}),
        ("callback", disp, {"reached": False}),
        ("callback", disp, {"reached": True, "satisfaction": 4}),
    ):
        answer = client.post(f"{BASE}/{first['id']}/{action}", json=body, headers=who)
        assert answer.status_code == 200, (action, answer.text)
    again = _open(client, disp, level=1, cause="safety-circuit").json()
    assert again["repeat_of"] == first["id"]
    complaint = client.post(
        "/api/v1/complaints",
        json={"device_id": "a-el-1", "channel": "phone", "complainant": "x", "subject": "y"},
        headers=disp,
    ).json()
    client.post(f"/api/v1/complaints/{complaint['id']}/answer", json={}, headers=disp)
    month = clock.now().strftime("%Y-%m")
    [row] = [
        r
        for r in client.get(f"/api/v1/reports/monthly?month={month}", headers=disp).json()
        if r["firm_id"] == fleet.ids["firm_a"]
    ]
    assert (row["work_orders"], row["work_orders_level_1"], row["work_orders_level_3"]) == (3, 2, 1)
    assert second["id"] != first["id"]
    assert row["work_orders_within_sla"] == 2 / 3  # the first missed its response
    assert row["repeat_faults"] == 1
    assert (row["complaints"], row["complaints_answered_in_time"]) == (1, 1.0)
    assert (row["callbacks_reached"], row["callbacks_unreached"]) == (1, 1)
    assert row["mean_satisfaction"] == 4.0
    csv = client.get(f"/api/v1/reports/monthly?month={month}&format=csv", headers=disp).text
    header = csv.splitlines()[0].split(",")
    assert header[:2] == ["firm_id", "firm_name"] and header[-1] == "mean_satisfaction"
