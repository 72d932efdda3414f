"""Alarms through the API: scoped lists, acknowledge and clear via the alerts domain."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row

from alerts.service import raise_alarm
from tests.api.conftest import login
from tests.api.test_api_live import subscribe

AT = datetime(2026, 1, 5, 7, 45, tzinfo=UTC)


def raise_alarms(url: str, fleet) -> dict[str, int]:
    """An alarm on a-el-1, one on b-el-1 and one about firm A itself."""
    ids = {}
    with psycopg.connect(url, row_factory=dict_row) as conn:
        for name, source_type, source_id in (
            ("a", "device", "a-el-1"),
            ("b", "device", "b-el-1"),
            ("firm_a", "firm", fleet.ids["firm_a"]),
        ):
            alarm = raise_alarm(
                conn,
                source_type=source_type,
                source_id=source_id,
                type="maintenance.overdue",
                severity="major",
                message=f"overdue {name}",
                audience=["firm"],
                at=AT,
            )
            ids[name] = alarm.id
        conn.commit()
    return ids


def test_alarm_lists_are_scoped(client, db_url, fleet):
    ids = raise_alarms(db_url, fleet)
    seen = {
        user: {a["id"] for a in client.get("/api/v1/alarms", headers=login(client, user)).json()}
        for user in ("disp_a", "disp_b", "tech_a", "reg_j1", "maker_m1", "admin")
    }
    assert seen["disp_a"] == {ids["a"], ids["firm_a"]}
    assert seen["disp_b"] == {ids["b"]}
    assert seen["tech_a"] == {ids["a"]}
    assert seen["reg_j1"] == {ids["a"]}
    assert seen["maker_m1"] == {ids["a"]}
    assert seen["admin"] == set(ids.values())


def test_dispatcher_acknowledges_and_clears_own_alarm(client, db_url, fleet, clock):
    ids = raise_alarms(db_url, fleet)
    headers = login(client, "disp_a")
    acked = client.post(f"/api/v1/alarms/{ids['a']}/acknowledge", headers=headers)
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "disp_a"
    assert acked.json()["acknowledged_at"] == "2026-01-05T08:00:00Z"  # the injected clock

    cleared = client.post(
        f"/api/v1/alarms/{ids['a']}/clear", headers=headers, json={"reason": "serviced"}
    )
    assert cleared.json()["state"] == "cleared"
    detail = client.get(f"/api/v1/alarms/{ids['a']}", headers=headers).json()
    assert [h["change"] for h in detail["history"]] == ["raised", "acknowledged", "cleared"]
    assert detail["history"][-1]["detail"] == {"reason": "serviced"}

    again = client.post(f"/api/v1/alarms/{ids['a']}/acknowledge", headers=headers)
    assert again.status_code == 409
    assert "cleared" in again.json()["detail"]
    assert client.get("/api/v1/alarms", headers=headers).json()[0]["id"] == ids["firm_a"]
    history = client.get("/api/v1/alarms?state=cleared", headers=headers).json()
    assert [a["id"] for a in history] == [ids["a"]]


def test_firm_a_cannot_act_on_firm_b_alarms(client, db_url, fleet, db):
    ids = raise_alarms(db_url, fleet)
    headers = login(client, "disp_a")
    for action in ("acknowledge", "clear"):
        response = client.post(f"/api/v1/alarms/{ids['b']}/{action}", headers=headers)
        assert response.status_code == 404
        assert response.json() == {"detail": "alarm not found"}
    assert client.get(f"/api/v1/alarms/{ids['b']}", headers=headers).status_code == 404
    missing = client.get("/api/v1/alarms/999999", headers=headers)
    assert missing.status_code == 404 and missing.json() == {"detail": "alarm not found"}
    row = db.execute("SELECT state FROM alarms WHERE id = %s", (ids["b"],)).fetchone()
    assert row["state"] == "active"


def test_regulator_and_others_cannot_act_on_alarms(client, db_url, fleet, db):
    ids = raise_alarms(db_url, fleet)
    for user in ("reg_j1", "safety_u1", "maker_m1"):
        headers = login(client, user)
        response = client.post(f"/api/v1/alarms/{ids['a']}/acknowledge", headers=headers)
        assert response.status_code == 403, user
    row = db.execute("SELECT state FROM alarms WHERE id = %s", (ids["a"],)).fetchone()
    assert row["state"] == "active"


def test_bad_alarm_requests(shared_client):
    client = shared_client
    headers = login(client, "disp_a")
    assert client.get("/api/v1/alarms?state=open", headers=headers).status_code == 400
    assert client.get("/api/v1/alarms/0", headers=headers).status_code == 422
    response = client.post("/api/v1/alarms/1/clear", headers=headers, json={"why": "x"})
    assert response.status_code == 422


def test_alarm_changes_stream_to_those_in_scope(running_api, db_url, fleet):
    with subscribe(running_api.url, "disp_a") as firm_a, subscribe(running_api.url, "disp_b") as b:
        ids = raise_alarms(db_url, fleet)
        got = [firm_a.until("alert")["alert"]["id"] for _ in range(2)]
        assert sorted(got) == sorted([ids["a"], ids["firm_a"]])
        assert b.until("alert")["alert"]["id"] == ids["b"]
