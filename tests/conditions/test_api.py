"""/api/v1/inspections (rule L4) and /api/v1/condition-policies: scoped by rule A2, bad
requests answered with a reason, every threshold taken from policy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from compliance.inspections import flows
from compliance.log import service as compliance_log
from fleet.factory import FleetFactory
from tests.api.conftest import client, fleet, login  # noqa: F401 - the API's fixtures
from vigil.clock import FakeClock

ROUNDS = "/api/v1/inspections/rounds"
POLICIES = "/api/v1/condition-policies"


@pytest.fixture
def pole(db, fleet, clock):  # noqa: F811
    FleetFactory(db, at=clock.now()).device(
        "a-lp-1", site=fleet.ids["s1"], kind="light_pole", firm=fleet.ids["firm_a"]
    )
    return "a-lp-1"


def test_rounds_are_recorded_judged_and_scoped(client, fleet, pole):  # noqa: F811
    disp_a, disp_b = login(client, "disp_a"), login(client, "disp_b")
    patrol = client.post(
        ROUNDS, json={"kind": "patrol", "site_id": fleet.ids["s1"]}, headers=disp_a
    )
    assert patrol.status_code == 201, patrol.text
    assert patrol.json()["device_id"] is None and patrol.json()["passed"] is True
    measured = client.post(
        ROUNDS,
        json={"kind": "grounding", "device_id": pole, "measured": 5.2, "note": "wet soil"},
        headers=disp_a,
    )
    assert measured.status_code == 201, measured.text
    body = measured.json()
    # rule L4: grounding at most 4 ohm
    assert body["passed"] is False and body["unit"] == "ohm" and body["limits"]["max_ohm"] == 4.0
    listed = client.get(ROUNDS, headers=disp_a).json()
    assert sorted(r["kind"] for r in listed) == ["grounding", "patrol"]
    # rule A2: another firm sees none of it and cannot record on it
    assert client.get(ROUNDS, headers=disp_b).json() == []
    other = client.post(ROUNDS, json={"kind": "cleaning", "device_id": pole}, headers=disp_b)
    assert other.status_code == 404
    section = client.post(
        ROUNDS, json={"kind": "patrol", "site_id": fleet.ids["s1"]}, headers=disp_b
    )
    assert section.status_code == 404
    # rule A2: a technician not assigned to the pole does not find it
    tech = login(client, "tech_a")
    unassigned = client.post(ROUNDS, json={"kind": "cleaning", "device_id": pole}, headers=tech)
    assert unassigned.status_code == 404
    foreign = client.post(
        ROUNDS,
        json={"kind": "patrol", "site_id": fleet.ids["s1"], "technician_id": 10**6},
        headers=disp_a,
    )
    assert foreign.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (
            {"kind": "insulation", "device_id": "a-lp-1", "measured": 3, "test_voltage_v": 250},
            400,
            "500 V",
        ),
        ({"kind": "grounding", "device_id": "a-lp-1"}, 400, "measured"),
        ({"kind": "patrol", "device_id": "a-lp-1"}, 400, "site_id"),
        ({"kind": "cleaning", "site_id": 1}, 400, "device_id"),
        ({"kind": "cleaning", "device_id": "a-el-1"}, 400, "not a pole or mast"),
        ({"kind": "sweeping", "device_id": "a-lp-1"}, 422, "kind"),
        ({"kind": "cleaning", "device_id": "a-lp-1", "measured": -1}, 422, "measured"),
        ({"kind": "cleaning", "device_id": "a-lp-1", "colour": "red"}, 422, "colour"),
    ],
)
def test_bad_rounds_get_a_reason_not_a_server_error(client, pole, body, status, says):  # noqa: F811
    answer = client.post(ROUNDS, json=body, headers=login(client, "disp_a"))
    assert answer.status_code == status, answer.text
    assert says in answer.text


def test_a_future_round_is_refused(client, pole, clock):  # noqa: F811
    later = (clock.now() + timedelta(hours=1)).isoformat()
    answer = client.post(
        ROUNDS,
        json={"kind": "cleaning", "device_id": pole, "performed_at": later},
        headers=login(client, "disp_a"),
    )
    assert answer.status_code == 400 and "future" in answer.text


def test_findings_and_due_rounds_are_listed_in_scope(client, db, pole, clock):  # noqa: F811
    later = clock.advance(timedelta(days=15))  # a whole local week since registration
    flows.check_rounds(db, now=later)
    disp_a = login(client, "disp_a")  # after the clock moved: a session lasts hours
    due = client.get("/api/v1/inspections/due", params={"overdue": "true"}, headers=disp_a)
    assert due.status_code == 200
    assert [d["kind"] for d in due.json()] == ["pole_box"]
    findings = client.get(
        "/api/v1/inspections/findings", params={"unresolved": "true"}, headers=disp_a
    ).json()
    kinds = {(f["kind"], f["device_id"]) for f in findings}
    assert ("pole_box", pole) in kinds and ("patrol", None) in kinds
    assert client.get("/api/v1/inspections/findings", headers=login(client, "disp_b")).json() == []


def test_policies_are_set_per_jurisdiction_and_device_and_logged(client, db, fleet, pole):  # noqa: F811
    reg_j1, reg_j2, admin = login(client, "reg_j1"), login(client, "reg_j2"), login(client, "admin")
    path = f"{POLICIES}/jurisdictions/{fleet.ids['j1']}"
    answer = client.put(path, json={"values": {"grounding_max_ohm": 10}}, headers=reg_j1)
    assert answer.status_code == 200, answer.text
    assert answer.json()["values"]["grounding_max_ohm"] == 10
    assert (
        client.put(path, json={"values": {"grounding_max_ohm": 1}}, headers=reg_j2).status_code
        == 404
    )
    in_force = client.get(f"{POLICIES}/devices/{pole}/in-force", headers=admin).json()
    assert in_force["values"]["grounding_max_ohm"] == 10
    assert in_force["source"]["grounding_max_ohm"] == "jurisdiction"
    assert in_force["source"]["patrols_per_week"] == "default"
    # the measurement is judged by the policy in force, recorded with it
    saved = client.post(
        ROUNDS, json={"kind": "grounding", "device_id": pole, "measured": 6.0}, headers=admin
    ).json()
    assert saved["passed"] is True and saved["limits"]["max_ohm"] == 10
    # a firm manager sets its pole's rated power; a dispatcher may not
    device_path = f"{POLICIES}/devices/{pole}"
    rated = client.put(
        device_path, json={"values": {"lamp_rated_w": 150}}, headers=login(client, "mgr_a")
    )
    assert rated.status_code == 200 and rated.json()["values"]["lamp_rated_w"] == 150
    assert (
        client.put(
            device_path, json={"values": {"lamp_rated_w": 1}}, headers=login(client, "disp_a")
        ).status_code
        == 403
    )
    listed = client.get(POLICIES, headers=login(client, "mgr_a")).json()
    assert {(p["jurisdiction_id"], p["device_id"]) for p in listed} == {
        (None, None),
        (fleet.ids["j1"], None),
        (None, pole),
    }
    changes = [e for e in compliance_log.entries(db) if e.kind == "condition_policy.changed"]
    assert [e.body["changed"] for e in changes] == [
        {"grounding_max_ohm": 10},
        {"lamp_rated_w": 150},
    ]


@pytest.mark.parametrize(
    ("path", "values", "says"),
    [
        ("/default", {"grounding_max_ohm": None}, "every value"),
        ("/default", {"voltage_band": 1.5}, "voltage_band"),
        ("/default", {"patrols_per_week": 2.5}, "whole number"),
        ("/default", {"no_such": 1}, "no such threshold"),
        ("/default", {}, "values"),
        ("/jurisdictions/1", {"patrols_per_week": 9}, "patrols_per_week"),
    ],
)
def test_bad_policies_get_a_reason_not_a_server_error(client, fleet, path, values, says):  # noqa: F811
    answer = client.put(POLICIES + path, json={"values": values}, headers=login(client, "admin"))
    assert 400 <= answer.status_code < 500, answer.text
    assert says in answer.text


def test_the_cli_shows_and_sets_policy_through_the_same_flow(db, db_url, monkeypatch, capsys):
    from runtime.cli import main

    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    FleetFactory(db, at=FakeClock().now()).jurisdiction("sh-pd")
    assert main(["policy", "set", "--jurisdiction", "sh-pd", "patrols_per_week=7"]) == 0
    shown = capsys.readouterr().out
    assert "patrols_per_week\t7" in shown and "grounding_max_ohm\tinherit" in shown
    assert main(["policy", "set", "--jurisdiction", "sh-pd", "patrols_per_week=inherit"]) == 0
    assert "patrols_per_week\tinherit" in capsys.readouterr().out
    assert main(["policy", "show"]) == 0
    assert "insulation_test_v\t500" in capsys.readouterr().out
    # refused with the reason, nothing changed
    assert main(["policy", "set", "voltage_band=2"]) == 2
    assert "voltage_band" in capsys.readouterr().err
    assert main(["policy", "set", "--device", "nope", "lamp_rated_w=100"]) == 2
    assert main(["policy", "set", "lamp_rated_w=lots"]) == 2
    assert "not a number" in capsys.readouterr().err
    kinds = [e.kind for e in compliance_log.entries(db)]
    assert kinds.count("condition_policy.changed") == 2
