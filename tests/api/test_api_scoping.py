"""Tenant isolation (rule A2): out-of-scope reads answer 404, regulators never write."""

from __future__ import annotations

import pytest

from fleet.factory import FleetFactory
from tests.api.conftest import login
from vigil.clock import FakeClock

EXPECTED = {
    "admin": {"a-el-1", "a-el-2", "a-em-1", "b-el-1"},
    "disp_a": {"a-el-1", "a-el-2", "a-em-1"},
    "mgr_a": {"a-el-1", "a-el-2", "a-em-1"},
    "disp_b": {"b-el-1"},
    "tech_a": {"a-el-1"},
    "safety_u1": {"a-el-1", "a-el-2", "a-em-1"},
    "maker_m1": {"a-el-1", "a-el-2"},
    "reg_j1": {"a-el-1", "a-el-2", "a-em-1"},
    "reg_j2": {"b-el-1"},
}


@pytest.mark.parametrize("username", sorted(EXPECTED))
def test_each_role_lists_exactly_its_scope(shared_client, username):
    client = shared_client
    headers = login(client, username)
    page = client.get("/api/v1/assets", headers=headers).json()
    assert {a["id"] for a in page["items"]} == EXPECTED[username]
    assert page["total"] == len(EXPECTED[username])
    for device in EXPECTED["admin"] - EXPECTED[username]:
        # rule A2: outside the scope is "not found", never "forbidden"
        for path in ("", "/events", "/telemetry?metric=floor"):
            response = client.get(f"/api/v1/assets/{device}{path}", headers=headers)
            assert response.status_code == 404, (username, device, path)
            assert response.json() == {"detail": "asset not found"}


def test_firm_a_cannot_tell_firm_b_assets_from_missing_ones(shared_client):
    client = shared_client
    headers = login(client, "disp_a")
    foreign = client.get("/api/v1/assets/b-el-1", headers=headers)
    missing = client.get("/api/v1/assets/no-such-device", headers=headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_technician_sees_only_assigned_assets(client, db, fleet):
    headers = login(client, "tech_a")
    assert client.get("/api/v1/assets/a-el-1", headers=headers).status_code == 200
    assert client.get("/api/v1/assets/a-el-2", headers=headers).status_code == 404
    FleetFactory(db, at=FakeClock().now()).assign(technician=fleet.ids["ta1"], device="a-el-2")
    assert client.get("/api/v1/assets/a-el-2", headers=headers).status_code == 200


def test_technician_assignment_outside_own_firm_grants_nothing(client, db, fleet):
    # an assignment row to another firm's asset must not widen the scope (003:L1141)
    FleetFactory(db, at=FakeClock().now()).assign(technician=fleet.ids["ta1"], device="b-el-1")
    headers = login(client, "tech_a")
    assert client.get("/api/v1/assets/b-el-1", headers=headers).status_code == 404


def test_regulator_cannot_write(shared_client):
    client = shared_client
    headers = login(client, "reg_j1")
    # reads work
    assert client.get("/api/v1/assets/a-el-1", headers=headers).status_code == 200
    # writes are refused by role (403), whatever the target
    response = client.post("/api/v1/users", headers=headers, json={})
    assert response.status_code == 403
