"""``/api/v1/fleet``: scoped by rule A2 for every role; validation errors name the field."""

from __future__ import annotations

from tests.api.conftest import login

F = "/api/v1/fleet"


def keys(response, field: str = "id") -> set:
    assert response.status_code == 200, response.text
    return {item[field] for item in response.json()}


def test_a_regulator_reads_its_jurisdiction_and_manages_only_its_policies(client):
    reg = login(client, "reg_j1")
    assert keys(client.get(f"{F}/devices", headers=reg)) == {"a-el-1", "a-el-2", "a-em-1"}
    assert keys(client.get(f"{F}/sites", headers=reg), "code") == {"s1"}
    assert keys(client.get(f"{F}/jurisdictions", headers=reg), "code") == {"J1"}
    assert keys(client.get(f"{F}/firms", headers=reg), "name") == {"Firm A"}
    assert client.get(f"{F}/devices/b-el-1", headers=reg).status_code == 404
    changed = client.patch(f"{F}/jurisdictions/J1", json={"rescue_minutes_city": 25}, headers=reg)
    assert changed.status_code == 200 and changed.json()["rescue_minutes_city"] == 25
    other = client.patch(f"{F}/jurisdictions/J2", json={"rescue_minutes_city": 25}, headers=reg)
    assert other.status_code == 404  # outside its jurisdiction: not even said to exist
    new = client.post(f"{F}/jurisdictions", json={"code": "J9", "name": "Nine"}, headers=reg)
    assert new.status_code == 403
    device = client.patch(f"{F}/devices/a-el-1", json={"serial_no": "X"}, headers=reg)
    assert device.status_code == 403


def test_a_firm_manages_its_technicians_and_contracted_assets_only(client, fleet):
    mgr = login(client, "mgr_a")
    mine = {
        "certificate_no": "CERT-A2",
        "firm": "Firm A",
        "name": "Tech A2",
        "certificate_expires_on": "2030-01-01",
    }
    created = client.post(f"{F}/technicians", json=mine, headers=mgr)
    assert created.status_code == 201, created.text
    assert created.json()["firm"] == "Firm A" and created.json()["row_id"] > 0
    theirs = mine | {"certificate_no": "CERT-B9", "firm": "Firm B"}
    refused = client.post(f"{F}/technicians", json=theirs, headers=mgr)
    assert refused.status_code == 403
    admin = login(client, "admin")
    assert client.get(f"{F}/technicians/CERT-B9", headers=admin).status_code == 404  # rolled back
    assert client.patch(
        f"{F}/devices/b-el-1", json={"serial_no": "X"}, headers=mgr
    ).status_code == (404)
    due = client.patch(
        f"{F}/devices/a-el-1",
        json={"next_inspection_due": "2026-03-01", "registration_code": "梯11沪0001"},
        headers=mgr,
    )
    assert due.status_code == 200 and due.json()["next_inspection_due"] == "2026-03-01"
    assert keys(client.get(f"{F}/devices", headers=mgr)) == {"a-el-1", "a-el-2", "a-em-1"}
    assert keys(client.get(f"{F}/contracts", headers=mgr), "device") == {
        "a-el-1",
        "a-el-2",
        "a-em-1",
    }
    retired = client.post(f"{F}/technicians/CERT-A2/retire", headers=mgr)
    assert retired.status_code == 200 and retired.json()["retired_at"] is not None
    assert retired.json()["active"] is False
    listed = keys(client.get(f"{F}/technicians", headers=mgr), "certificate_no")
    assert listed == {"CERT-A1"}
    assert "CERT-A2" in keys(
        client.get(f"{F}/technicians?include_retired=true", headers=mgr), "certificate_no"
    )


def test_a_firm_onboards_a_new_customer_and_claims_the_lift_by_contract(client):
    mgr = login(client, "mgr_a")
    steps = [
        ("user_units", {"name": "New Tower Co."}),
        (
            "sites",
            {
                "code": "new-tower",
                "user_unit": "New Tower Co.",
                "jurisdiction": "J1",
                "name": "New Tower",
                "latitude": 31.1,
                "longitude": 121.3,
                "tier": "city",
            },
        ),
        (
            "devices",
            {
                "id": "nt-lift-1",
                "kind": "elevator",
                "model": "lift-controller",
                "site": "new-tower",
            },
        ),
        (
            "contracts",
            {
                "device": "nt-lift-1",
                "firm": "Firm A",
                "starts_on": "2026-01-01",
                "ends_on": "2026-12-31",
            },
        ),
    ]
    for kind, body in steps:
        response = client.post(f"{F}/{kind}", json=body, headers=mgr)
        assert response.status_code == 201, (kind, response.text)
    assert "nt-lift-1" in keys(client.get(f"{F}/devices", headers=mgr))
    # firm B cannot take the lift over while firm A's contract runs
    other = login(client, "admin")
    clash = client.post(
        f"{F}/contracts",
        json={
            "device": "nt-lift-1",
            "firm": "Firm B",
            "starts_on": "2026-06-01",
            "ends_on": "2027-05-31",
        },
        headers=other,
    )
    assert clash.status_code == 422
    assert clash.json()["detail"][0]["loc"] == ["body", "starts_on"]
    assert "overlaps" in clash.json()["detail"][0]["msg"]


def test_a_user_unit_manages_its_own_safety_managers(client):
    safety = login(client, "safety_u1")
    body = {"certificate_no": "A-001", "user_unit": "Unit one", "name": "Ms Zhou", "site": "s1"}
    assert client.post(f"{F}/safety_managers", json=body, headers=safety).status_code == 201
    other = body | {"certificate_no": "A-002", "user_unit": "Unit two", "site": None}
    assert client.post(f"{F}/safety_managers", json=other, headers=safety).status_code == 403
    assert keys(client.get(f"{F}/safety_managers", headers=safety), "certificate_no") == {"A-001"}
    assert client.post(f"{F}/technicians", json={}, headers=safety).status_code in (403, 422)
    device = client.post(f"{F}/devices/a-el-1/retire", headers=safety)
    assert device.status_code == 403


def test_read_only_roles_cannot_write(client):
    for user in ("disp_a", "tech_a", "maker_m1"):
        headers = login(client, user)
        response = client.post(f"{F}/manufacturers", json={"name": "Maker three"}, headers=headers)
        assert response.status_code == 403, user
    tech = login(client, "tech_a")
    assert keys(client.get(f"{F}/devices", headers=tech)) == {"a-el-1"}  # assigned only
    assert keys(client.get(f"{F}/technicians", headers=tech), "certificate_no") == {"CERT-A1"}
    maker = login(client, "maker_m1")
    assert keys(client.get(f"{F}/devices", headers=maker)) == {"a-el-1", "a-el-2"}


def test_validation_errors_name_the_field(client):
    admin = login(client, "admin")
    missing = client.post(
        f"{F}/devices", json={"id": "x-1", "kind": "elevator", "model": "m"}, headers=admin
    )
    assert missing.status_code == 422
    assert ["body", "site"] in [d["loc"][:2] for d in missing.json()["detail"]]
    unknown = client.post(
        f"{F}/devices",
        json={"id": "x-1", "kind": "elevator", "model": "m", "site": "nowhere"},
        headers=admin,
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == [
        {"loc": ["body", "site"], "type": "fleet", "msg": "site 'nowhere' is not in the registry"}
    ]
    again = client.post(
        f"{F}/devices",
        json={"id": "a-el-1", "kind": "elevator", "model": "m", "site": "s1"},
        headers=admin,
    )
    assert again.status_code == 409
    typo = client.patch(f"{F}/devices/a-el-1", json={"serail_no": "1"}, headers=admin)
    assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["body", "serail_no"]
    bad = client.patch(f"{F}/devices/a-el-1", json={"modbus_port": 70000}, headers=admin)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "modbus_port"]
    rename = client.patch(f"{F}/devices/a-el-1", json={"id": "a-el-9"}, headers=admin)
    assert rename.status_code == 422 and "cannot change" in rename.json()["detail"][0]["msg"]
    assert client.get(f"{F}/contracts/a-el-1/not-a-date", headers=admin).status_code == 404
    assert client.get(f"{F}/contracts/a-el-1", headers=admin).status_code == 404


def test_a_retired_device_keeps_its_history(client, db_url):
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (device_id, metric, ts, value) "
            "VALUES ('a-el-2', 'door_state', '2026-01-04T08:00:00Z', 2)"
        )
    admin = login(client, "admin")
    retired = client.post(f"{F}/devices/a-el-2/retire", headers=admin)
    assert retired.status_code == 200 and retired.json()["retired_at"] is not None
    assert "a-el-2" not in keys(client.get(f"{F}/devices", headers=admin))
    assert client.get(f"{F}/devices/a-el-2", headers=admin).status_code == 200
    events = client.get("/api/v1/assets/a-el-2/events", headers=admin)
    assert events.status_code == 200 and len(events.json()) == 1
    mgr = login(client, "mgr_a")  # its contract ended with the device: no longer the firm's
    assert client.get(f"{F}/devices/a-el-2", headers=mgr).status_code == 404


def test_the_console_sees_the_periodic_inspection_state(client, db, clock):
    # rule M12: the finding opened by the compliance check shows on the asset
    from datetime import timedelta

    from compliance.maintenance import flows as maintenance

    admin = login(client, "admin")
    due = (clock.now() + timedelta(days=10)).date().isoformat()
    patched = client.patch(
        f"{F}/devices/a-el-1",
        json={"next_inspection_due": due, "registration_code": "梯11沪HP0001(19)"},
        headers=admin,
    )
    assert patched.status_code == 200
    asset = client.get("/api/v1/assets/a-el-1", headers=admin).json()
    assert asset["next_inspection_due"] == due and asset["inspection"] is None
    maintenance.check_findings(db, now=clock.now())
    asset = client.get("/api/v1/assets/a-el-1", headers=admin).json()
    assert asset["inspection"] == "inspection_due"
    assert asset["registration_code"] == "梯11沪HP0001(19)"
    clock.advance(timedelta(days=11))
    maintenance.check_findings(db, now=clock.now())
    admin = login(client, "admin")  # the session ended while the days passed
    assert client.get("/api/v1/assets/a-el-1", headers=admin).json()["inspection"] == (
        "inspection_lapsed"
    )
