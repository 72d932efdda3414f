"""Assets, live state and bucketed telemetry; bad requests get a 4xx with a message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.conftest import login

T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)  # an hour before the fake clock's now


def put_state(db, device: str, values: dict[str, float], ts: datetime = T0) -> None:
    """Latest values of a device, as ingest writes them."""
    for metric, value in values.items():
        db.execute(
            """INSERT INTO device_state (device_id, metric, value, ts) VALUES (%s, %s, %s, %s)
               ON CONFLICT (device_id, metric) DO UPDATE SET value = EXCLUDED.value,
               ts = EXCLUDED.ts""",
            (device, metric, value, ts),
        )


def test_asset_carries_its_live_state_and_condition(client, db):
    put_state(db, "a-el-1", {"service_mode": 1, "floor": 4, "fault_code": 0})
    put_state(db, "a-el-2", {"service_mode": 1, "lockout_state": 2})
    headers = login(client, "disp_a")
    one = client.get("/api/v1/assets/a-el-1", headers=headers).json()
    assert one["state"]["floor"]["value"] == 4
    assert one["condition"] == "ok"
    assert one["last_seen"] == "2026-01-05T07:00:00Z"
    assert one["firm_name"] == "Firm A"
    page = client.get("/api/v1/assets?kind=elevator", headers=headers).json()
    conditions = {a["id"]: a["condition"] for a in page["items"]}
    assert conditions == {"a-el-1": "ok", "a-el-2": "locked_out"}
    # the grid asks for a summary of the state; the condition still reads all of it
    grid = client.get("/api/v1/assets?kind=elevator&state=summary", headers=headers).json()
    assert set(grid["items"][0]["state"]) == {"service_mode", "floor", "fault_code"}
    assert grid["items"][1]["condition"] == "locked_out"
    bare = client.get("/api/v1/assets?kind=elevator&state=none", headers=headers).json()
    assert [a["state"] for a in bare["items"]] == [{}, {}]
    assert [a["condition"] for a in bare["items"]] == ["ok", "locked_out"]
    meter = client.get("/api/v1/assets/a-em-1", headers=headers).json()
    assert meter["condition"] == "unknown" and meter["last_seen"] is None
    # times are written alike everywhere: UTC, Z, microseconds only when there are any
    put_state(db, "a-em-1", {"frequency": 50.0}, ts=T0.replace(microsecond=120500))
    meter = client.get("/api/v1/assets?kind=energy_meter", headers=headers).json()["items"][0]
    assert meter["state"]["frequency"]["ts"] == "2026-01-05T07:00:00.120500Z"
    assert meter["last_seen"] == "2026-01-05T07:00:00.120500Z"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"service_mode": 2}, "inspection"),
        ({"service_mode": 1, "alarm_button": 1}, "alarm"),
        ({"service_mode": 1, "fault_code": 11}, "alarm"),
        ({"service_mode": 1, "fault_code": 2}, "fault"),
        ({"service_mode": 0}, "out_of_service"),
        ({"service_mode": 1, "fault_code": 43}, "ok"),
    ],
)
def test_elevator_condition_follows_gbt_24476_state(client, db, state, expected):
    put_state(db, "a-el-1", state)
    headers = login(client, "disp_a")
    assert client.get("/api/v1/assets/a-el-1", headers=headers).json()["condition"] == expected


def test_assets_paginate_and_search(client):
    headers = login(client, "admin")
    page = client.get("/api/v1/assets?limit=2&offset=1", headers=headers).json()
    assert page["total"] == 4
    assert [a["id"] for a in page["items"]] == ["a-el-2", "a-em-1"]
    found = client.get("/api/v1/assets?search=em", headers=headers).json()
    assert [a["id"] for a in found["items"]] == ["a-em-1"]
    beyond = client.get("/api/v1/assets?offset=100", headers=headers).json()
    assert beyond == {"total": 4, "items": []}


def insert_telemetry(db, device: str, metric: str, points: list[tuple[datetime, float]]) -> None:
    """Telemetry rows, with the daily partitions they need."""
    db.execute("SELECT ensure_telemetry_partitions(%s, %s)", (T0.date(), T0.date()))
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO telemetry (device_id, metric, ts, value) VALUES (%s, %s, %s, %s)",
            [(device, metric, ts, value) for ts, value in points],
        )


def test_telemetry_is_bucketed_with_date_bin(client, db):
    # one reading per 10 s for 10 minutes: value = minute index
    points = [(T0 + timedelta(seconds=10 * i), float(i // 6)) for i in range(60)]
    insert_telemetry(db, "a-em-1", "power_total", points)
    headers = login(client, "disp_a")
    response = client.get(
        "/api/v1/assets/a-em-1/telemetry",
        headers=headers,
        params={
            "metric": "power_total",
            "start": T0.isoformat(),
            "end": (T0 + timedelta(minutes=10)).isoformat(),
            "bucket_s": 120,
        },
    )
    assert response.status_code == 200, response.text
    series = response.json()
    assert series["unit"] == "W" and series["bucket_s"] == 120
    buckets = series["buckets"]
    assert len(buckets) == 5
    assert buckets[0] == {
        "ts": "2026-01-05T07:00:00Z",
        "avg": 0.5,
        "min": 0.0,
        "max": 1.0,
        "last": 1.0,
        "count": 12,
    }
    assert [b["avg"] for b in buckets] == [0.5, 2.5, 4.5, 6.5, 8.5]


def test_telemetry_defaults_to_the_last_hour_of_the_clock(client, db, clock):
    insert_telemetry(db, "a-em-1", "frequency", [(T0 + timedelta(minutes=30), 50.0)])
    headers = login(client, "disp_a")
    series = client.get("/api/v1/assets/a-em-1/telemetry?metric=frequency", headers=headers).json()
    assert series["end"] == "2026-01-05T08:00:00Z"  # the fake clock's now
    assert series["bucket_s"] == 12  # one hour / 300 buckets
    assert [b["avg"] for b in series["buckets"]] == [50.0]


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("metric=floor", 400, "has no metric 'floor'"),
        (
            "metric=frequency&start=2026-01-05T08:00:00Z&end=2026-01-05T07:00:00Z",
            400,
            "start must be before end",
        ),
        (
            "metric=frequency&start=2024-01-01T00:00:00Z&end=2026-01-05T07:00:00Z",
            400,
            "at most 366 days",
        ),
        (
            "metric=frequency&start=2026-01-05T00:00:00&end=2026-01-05T07:00:00Z",
            422,
            "with a time zone",
        ),
        (
            # a bare number is not a time (pydantic alone would read 0.5 s after 1970)
            "metric=frequency&start=0.5&end=2026-01-05T07:00:00Z",
            422,
            "ISO 8601",
        ),
        ("metric=frequency&start=2026-01-01T00:00:00Z&bucket_s=1", 400, "at most 10000"),
        ("metric=frequency&bucket_s=0", 422, "greater than or equal to 1"),
        ("metric=frequency&start=yesterday", 422, "date-time"),
        ("", 422, "Field required"),
    ],
)
def test_bad_telemetry_requests_get_a_4xx_with_a_message(shared_client, query, status, message):
    client = shared_client
    headers = login(client, "disp_a")
    response = client.get(f"/api/v1/assets/a-em-1/telemetry?{query}", headers=headers)
    assert response.status_code == status
    assert message in str(response.json()["detail"])


def test_events_of_an_asset_newest_first(client, db):
    for i, (metric, value) in enumerate([("door_state", 2), ("door_state", 0), ("floor", 3)]):
        db.execute(
            "INSERT INTO events (device_id, metric, ts, value) VALUES ('a-el-1', %s, %s, %s)",
            (metric, T0 + timedelta(minutes=i), value),
        )
    headers = login(client, "tech_a")
    events = client.get("/api/v1/assets/a-el-1/events", headers=headers).json()
    assert [(e["metric"], e["value"]) for e in events] == [
        ("floor", 3),
        ("door_state", 0),
        ("door_state", 2),
    ]
    doors = client.get("/api/v1/assets/a-el-1/events?metric=door_state", headers=headers).json()
    assert len(doors) == 2


def test_bad_asset_ids_and_params_are_rejected_with_a_message(shared_client):
    client = shared_client
    headers = login(client, "admin")
    response = client.get("/api/v1/assets/bad%00id", headers=headers)
    assert response.status_code == 422
    assert "pattern" in str(response.json()["detail"])
    response = client.get("/api/v1/assets?limit=0", headers=headers)
    assert response.status_code == 422
    response = client.get("/api/v1/assets?site_id=99999999999999999999", headers=headers)
    assert response.status_code == 422


def test_the_tile_status_is_the_worst_open_condition_not_ok(client, db, fleet, clock):
    """A failed lamp, an overdue lift, an entrapment: never green "ok" (issue 17)."""
    from alerts import service as alerts

    headers = login(client, "admin")
    put_state(db, "a-el-1", {"service_mode": 1, "fault_code": 0})
    put_state(db, "a-el-2", {"service_mode": 1, "fault_code": 0})
    put_state(db, "a-em-1", {"power_total": 1200})

    def status(device: str) -> str:
        asset = client.get(f"/api/v1/assets/{device}", headers=headers).json()
        assert asset["timezone"] == "Asia/Shanghai"
        return asset["status"]

    assert [status(d) for d in ("a-el-1", "a-el-2", "a-em-1")] == ["ok", "ok", "ok"]
    # rule E2 on the meter: an open alarm, whatever its controller says
    alerts.raise_alarm(
        db, source_type="device", source_id="a-em-1", type="condition.voltage",
        severity="major", message="voltage out of band", audience=["firm"], at=clock.now(),
    )  # fmt: skip
    assert status("a-em-1") == "alarm"
    listed = client.get("/api/v1/assets?kind=energy_meter", headers=headers).json()["items"]
    assert listed[0]["alarm"] == {"severity": "major", "type": "condition.voltage"}
    # rule M5: overdue (its maintenance alarm is shown as the escalation, not as an alarm)
    db.execute(
        "INSERT INTO maintenance_escalations (device_id, state, since) VALUES (%s, %s, %s)",
        ("a-el-2", "overdue", clock.now()),
    )
    alerts.raise_alarm(
        db, source_type="device", source_id="a-el-2", type="maintenance.overdue",
        severity="major", message="overdue", audience=["firm"], at=clock.now(),
    )  # fmt: skip
    assert status("a-el-2") == "overdue"
    db.execute("UPDATE maintenance_escalations SET state = 'locked_out' WHERE device_id = 'a-el-2'")
    assert status("a-el-2") == "locked_out"
    # passengers trapped: the worst of all
    put_state(db, "a-el-1", {"fault_code": 11})
    assert status("a-el-1") == "entrapment"
