"""Malformed and unregistered messages land in dead_letters with their reason; the valid ones
among them are stored; ingest never stops."""

from __future__ import annotations

import json

import psycopg

from fleet.factory import FleetFactory
from ingest.registry import DeviceRegistry
from tests.ingest.conftest import (
    count,
    make_batch,
    make_writer,
    register_fleet,
    running_worker,
    telemetry,
)
from vigil import wire
from vigil.wire import CommandOutcome, CommandResult


def _body(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def test_malformed_kinds_are_dead_lettered_and_valid_ones_stored(
    db_url, broker, clock, unique_id, publisher_factory
):
    fleet = register_fleet(db_url, gateway=unique_id)
    other = register_fleet(db_url, gateway=f"{unique_id}-b", meters=1)
    now = clock.now_ms()
    meter = fleet.meters[0]
    topic = wire.topic(wire.Channel.TELEMETRY, fleet.gateway, meter)
    sample = {"m": "voltage_l1", "t": now, "v": 230.0}
    bad = [
        ("malformed_json", topic, b'{"v":1,"seq":1,"samples":['),
        ("malformed_json", topic, b"\xff\xfe not utf-8"),
        ("not_an_object", topic, b"[1, 2, 3]"),
        ("unknown_version", topic, _body(v=2, seq=1, samples=[sample])),
        ("missing_field", topic, _body(v=1, samples=[sample])),
        ("unknown_field", topic, _body(v=1, seq=1, samples=[sample], colour="red")),
        ("wrong_type", topic, _body(v=1, seq="1", samples=[sample])),
        (
            "non_finite",
            topic,
            b'{"v":1,"seq":1,"samples":[{"m":"voltage_l1","t":%d,"v":NaN}]}' % now,
        ),
        (
            "non_finite",
            topic,
            b'{"v":1,"seq":1,"samples":[{"m":"voltage_l1","t":%d,"v":1e999}]}' % now,
        ),
        ("future_timestamp", topic, _body(v=1, seq=1, samples=[{**sample, "t": now + 3600_000}])),
        (
            "stale_timestamp",
            topic,
            _body(v=1, seq=1, samples=[{**sample, "t": now - 100 * 86_400_000}]),
        ),
        ("oversize", topic, b" " * (300 * 1024)),
        ("empty_batch", topic, _body(v=1, seq=1, samples=[])),
        (
            "too_many_items",
            topic,
            _body(v=1, seq=1, samples=[{**sample, "t": now - i} for i in range(5001)]),
        ),
        ("bad_value", topic, _body(v=1, seq=1, samples=[{**sample, "q": "meh"}])),
        (
            "bad_topic",
            f"vigil/v1/telemetry/{fleet.gateway}/bad$id",
            _body(v=1, seq=1, samples=[sample]),
        ),
        (
            "unknown_device",
            wire.topic(wire.Channel.TELEMETRY, fleet.gateway, "ghost-1"),
            _body(v=1, seq=1, samples=[sample]),
        ),
        (
            "unknown_gateway",
            wire.topic(wire.Channel.TELEMETRY, "ghost-gw", meter),
            _body(v=1, seq=1, samples=[sample]),
        ),
        (
            "wrong_gateway",
            wire.topic(wire.Channel.TELEMETRY, other.gateway, meter),
            _body(v=1, seq=1, samples=[sample]),
        ),
        ("unknown_metric", topic, _body(v=1, seq=1, samples=[{**sample, "m": "door_state"}])),
        (
            "unknown_command",
            *wire.encode(
                CommandResult(
                    fleet.gateway, fleet.elevator, "never-issued", CommandOutcome.DONE, now
                )
            ),
        ),
        (
            "unknown_gateway",
            wire.topic(wire.Channel.STATUS, "ghost-gw"),
            _body(v=1, state="online", ts=now),
        ),
    ]
    valid = [
        telemetry(fleet, device=fleet.meters[i % 3], seq=i, start_ms=now - 60_000 + i * 100)
        for i in range(6)
    ]
    pub = publisher_factory(broker.url)
    with running_worker(db_url=db_url, mqtt_url=broker.url, clock=clock) as worker:
        for i, (_, name, payload) in enumerate(bad):
            pub.publish(name, payload)
            if i % 4 == 0:
                pub.publish(*valid[i // 4])
        total = len(bad) + len(valid)
        assert worker.stats.wait_for(lambda s: s.acked >= total, timeout=20), worker.stats

        assert worker.stats.dead_letters == len(bad)
        assert sum(worker.stats.rejected.values()) == len(bad)

    with psycopg.connect(db_url, autocommit=True) as conn:
        letters = conn.execute(
            "SELECT topic, payload, reason, detail, received_at, gateway_id, device_id, "
            "payload_size "
            "FROM dead_letters ORDER BY id"
        ).fetchall()
    # the raw bytes, an oversize payload's first 64 KiB only, and the size of each
    assert sorted((r[0], bytes(r[1]), r[2], r[7]) for r in letters) == sorted(
        (name, payload[:65_536], reason, len(payload)) for reason, name, payload in bad
    )
    reasons = {r[2] for r in letters}
    assert len(reasons) >= 10, reasons
    assert all(r[4] == clock.now() for r in letters)
    assert all(r[3] for r in letters), "every dead letter says why"
    ghost = next(r for r in letters if r[2] == "unknown_device")
    assert (ghost[5], ghost[6]) == (fleet.gateway, "ghost-1")
    # every valid message sent among them is stored, exactly once
    assert count(db_url, "SELECT count(*) FROM telemetry") == 10 * len(valid)


def test_device_registered_later_is_accepted(db_url, broker, clock, unique_id, publisher_factory):
    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    late = f"{unique_id}-late"
    topic = wire.topic(wire.Channel.TELEMETRY, fleet.gateway, late)
    payload = _body(v=1, seq=1, samples=[{"m": "voltage_l1", "t": now, "v": 230.0}])
    pub = publisher_factory(broker.url)
    with running_worker(
        db_url=db_url, mqtt_url=broker.url, clock=clock, unknown_device_recheck_s=0
    ) as worker:
        pub.publish(topic, payload)
        assert worker.stats.wait_for(lambda s: s.acked >= 1, timeout=10)
        assert worker.stats.rejected["unknown_device"] == 1
        with psycopg.connect(db_url, autocommit=True) as conn:
            site = conn.execute(
                "SELECT s.code FROM gateways g JOIN sites s ON s.id = g.site_id WHERE g.id = %s",
                (fleet.gateway,),
            ).fetchone()[0]
            FleetFactory(conn, at=clock.now()).device(
                late, site=site, kind="energy_meter", model="X", gateway=fleet.gateway
            )
        pub.publish(topic, payload)
        assert worker.stats.wait_for(lambda s: s.acked >= 2, timeout=10)
    assert count(db_url, "SELECT count(*) FROM telemetry WHERE device_id = %s", (late,)) == 1
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 1


def test_unknown_device_lookups_are_rate_limited(db, db_url, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    registry = DeviceRegistry(recheck_s=3600)
    with psycopg.connect(db_url) as conn:
        registry.load(conn)
        assert registry.lookups == 0
        for _ in range(20):
            registry.refresh(conn, devices={("ghost", fleet.gateway)}, gateways={"ghost-gw"})
        assert registry.lookups == 2  # one for the device, one for the gateway, then cached
        assert "ghost" not in registry.devices
        registry.refresh(conn, devices={(fleet.meters[0], fleet.gateway)}, gateways=())
        assert registry.lookups == 2  # known devices cost nothing


def test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_stored(
    db_url, clock, unique_id
):
    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    writer = make_writer(db_url, clock)  # caches the registry, then the device is deleted
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM devices WHERE id = %s", (fleet.meters[1],))
    try:
        result = writer.store(
            make_batch(
                clock,
                telemetry(fleet, device=fleet.meters[0], seq=1, start_ms=now - 100),
                telemetry(fleet, device=fleet.meters[1], seq=1, start_ms=now - 100),
                telemetry(fleet, device=fleet.meters[2], seq=1, start_ms=now - 100),
            )
        )
    finally:
        writer.conn.close()
    assert result.rejected == ("storage_error",)
    assert result.points_stored == 20
    with psycopg.connect(db_url, autocommit=True) as conn:
        letter = conn.execute("SELECT reason, device_id, detail FROM dead_letters").fetchone()
    assert letter[:2] == ("storage_error", fleet.meters[1])
    assert "foreign key" in letter[2]
    assert (
        count(db_url, "SELECT count(*) FROM telemetry WHERE device_id = %s", (fleet.meters[1],))
        == 0
    )


def test_registry_reload_picks_up_decommissioned_devices(db_url, unique_id, clock):
    fleet = register_fleet(db_url, gateway=unique_id)
    registry = DeviceRegistry(recheck_s=3600, reload_s=0)
    with psycopg.connect(db_url) as conn:
        registry.load(conn)
        assert not registry.devices[fleet.meters[0]].decommissioned
        with psycopg.connect(db_url, autocommit=True) as admin:
            FleetFactory(admin, at=clock.now()).retire("devices", fleet.meters[0])
        registry.refresh(conn, devices={(fleet.meters[0], fleet.gateway)}, gateways=())
        assert registry.devices[fleet.meters[0]].decommissioned


def test_topics_ingest_cannot_parse_reach_dead_letters_and_platform_traffic_is_ignored(
    db_url, broker, clock, unique_id, publisher_factory
):
    # ingest issue item 4: ingest listens to vigil/#, so a device maker publishing to a wrong
    # topic gets a dead letter with the reason; the platform's commands and alerts are not theirs
    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    good_topic, good = telemetry(fleet, device=fleet.meters[0], seq=1, start_ms=now - 100)
    wrong = [
        f"vigil/v2/telemetry/{fleet.gateway}/{fleet.meters[0]}",
        f"{good_topic}/extra",
        "vigil/telemetry",
    ]
    ignored = [
        (f"vigil/v1/cmd/{fleet.gateway}/{fleet.elevator}", b'{"v":1}'),
        ("vigil/alerts/firm/1", b'{"kind":"alarm"}'),
    ]
    pub = publisher_factory(broker.url)
    with running_worker(db_url=db_url, mqtt_url=broker.url, clock=clock) as worker:
        for topic in wrong:
            pub.publish(topic, good)
        for topic, payload in ignored:
            pub.publish(topic, payload)
        pub.publish(good_topic, good)
        total = len(wrong) + len(ignored) + 1
        assert worker.stats.wait_for(lambda s: s.acked >= total, timeout=20), worker.stats
    with psycopg.connect(db_url, autocommit=True) as conn:
        letters = conn.execute("SELECT topic, reason FROM dead_letters ORDER BY topic").fetchall()
    assert sorted(t for t, _ in letters) == sorted(wrong)
    assert {r for _, r in letters} <= {"bad_topic", "unknown_version"}
    assert count(db_url, "SELECT count(*) FROM telemetry") == 10
