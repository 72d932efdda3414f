"""Configuring work orders: service-level profiles (S1) and the working-day calendar (S3), by
the API and from a calendar file; bad input named, never a server error."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.api.conftest import login
from workorders import service
from workorders.cli import CalendarFileError, load_calendar, read_calendar

EXAMPLE = Path(__file__).resolve().parents[2] / "workorders" / "examples" / "calendar-2026.csv"
PREMIUM = {
    "name": "Tower premium",
    "levels": {
        "1": {
            "respond_min": 3,
            "escalate_after_min": 0,
            "restore_min": 120,
            "on_site_city_min": 20,
            "on_site_province_min": 120,
        }
    },
}


def test_an_admin_defines_profiles_and_the_built_in_ones_stay_the_rules(client, fleet):
    admin = login(client, "admin")
    saved = client.put("/api/v1/service-levels/tower-premium", json=PREMIUM, headers=admin)
    assert saved.status_code == 200, saved.text
    profiles = {p["code"]: p for p in client.get("/api/v1/service-levels", headers=admin).json()}
    assert profiles["tower-premium"]["levels"]["1"]["respond_min"] == 3
    assert (
        profiles["s1-default"]["built_in"]
        and profiles["s1-default"]["levels"]["2"]["on_site_city_min"] == 60
    )
    refused = client.put("/api/v1/service-levels/s1-default", json=PREMIUM, headers=admin)
    assert refused.status_code == 409 and "built in" in refused.json()["detail"]
    dispatcher = login(client, "disp_a")
    assert (
        client.put("/api/v1/service-levels/x", json=PREMIUM, headers=dispatcher).status_code == 403
    )
    bad = {"name": "x", "levels": {"5": PREMIUM["levels"]["1"]}}
    assert client.put("/api/v1/service-levels/x", json=bad, headers=admin).status_code == 422
    bad_code = client.put("/api/v1/service-levels/Bad Code", json=PREMIUM, headers=admin)
    assert bad_code.status_code == 422


def test_an_admin_declares_holidays_and_make_up_days(client, fleet):
    admin, j1 = login(client, "admin"), fleet.ids["j1"]
    day = client.put(
        f"/api/v1/calendar/{j1}/2026-10-01",
        json={"working": False, "name": "National Day"},
        headers=admin,
    )
    assert day.status_code == 200, day.text
    client.put(f"/api/v1/calendar/{j1}/2026-10-10", json={"working": True}, headers=admin)
    year = client.get(f"/api/v1/calendar/{j1}?year=2026", headers=admin).json()
    assert [(d["day"], d["working"]) for d in year] == [("2026-10-01", False), ("2026-10-10", True)]
    assert client.delete(f"/api/v1/calendar/{j1}/2026-10-10", headers=admin).status_code == 204
    assert client.delete(f"/api/v1/calendar/{j1}/2026-10-10", headers=admin).status_code == 404
    assert (
        client.put(
            "/api/v1/calendar/424242/2026-10-01", json={"working": False}, headers=admin
        ).status_code
        == 404
    )
    assert (
        client.put(
            f"/api/v1/calendar/{j1}/2026-13-01", json={"working": False}, headers=admin
        ).status_code
        == 422
    )
    assert client.get(f"/api/v1/calendar/{j1}", headers=admin).status_code == 422  # no year


def test_a_calendar_file_loads_and_its_problems_name_file_line_and_column(world, tmp_path):
    rows = read_calendar(EXAMPLE)
    assert load_calendar(world.conn, path=EXAMPLE, rows=rows) == 7
    overrides = service.calendar_overrides(
        world.conn,
        jurisdiction_id=world.jurisdiction_id,
        start=date(2026, 9, 1),
        end=date(2026, 10, 31),
    )
    assert overrides[date(2026, 10, 1)] is False and overrides[date(2026, 9, 27)] is True
    bad = tmp_path / "bad.csv"
    bad.write_text("jurisdiction,day,working,name\nsh,2026-02-30,no,x\nsh,2026-02-17,maybe,y\n")
    with pytest.raises(CalendarFileError) as problem:
        read_calendar(bad)
    assert f"{bad}:2: day: not a date" in str(problem.value)
    assert f"{bad}:3: working: yes or no" in str(problem.value)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("jurisdiction,day,working,name\nnowhere,2026-02-17,no,Spring\n")
    with pytest.raises(CalendarFileError, match=r"unknown.csv:2: jurisdiction: no jurisdiction"):
        load_calendar(world.conn, path=unknown, rows=read_calendar(unknown))
    missing = tmp_path / "missing.csv"
    missing.write_text("jurisdiction,day\nsh,2026-02-17\n")
    command = [
        sys.executable,
        "-m",
        "runtime.cli",
        "workorders",
        "calendar",
        str(missing),
        "--check",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "missing column(s) working, name" in result.stderr
