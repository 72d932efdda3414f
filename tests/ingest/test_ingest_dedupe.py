"""A redelivered message is stored once; device_state only moves forward in time."""

from __future__ import annotations

import psycopg

from tests.ingest.conftest import (
    count,
    make_batch,
    make_writer,
    register_fleet,
    running_worker,
    telemetry,
)
from vigil import notify, wire
from vigil.wire import Event, EventBatch, Sample, TelemetryBatch


def test_duplicates_within_and_across_batches_are_stored_once(db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    meter = fleet.meters[0]
    first = telemetry(fleet, device=meter, seq=1, start_ms=now - 1000, count=10)
    # same device, metric and timestamp under another seq (e.g. a gateway replaying its buffer)
    replay = wire.encode(
        TelemetryBatch(fleet.gateway, meter, 99, (Sample("voltage_l1", now - 1000, 999.0),))
    )
    events = wire.encode(
        EventBatch(fleet.gateway, fleet.elevator, 2, (Event("door_state", now - 10, 2.0, 0.0),))
    )
    writer = make_writer(db_url, clock)
    try:
        result = writer.store(make_batch(clock, first, first, events, events))
        assert (result.points_offered, result.points_stored) == (20, 10)
        assert result.events_stored == 1
        again = writer.store(make_batch(clock, first, replay, events))
        assert (again.points_offered, again.points_stored) == (11, 0)
        assert again.events_stored == 0
        flagged = writer.store(make_batch(clock, first, redelivered=True))
        assert flagged.points_stored == 0
    finally:
        writer.conn.close()
    assert count(db_url, "SELECT count(*) FROM telemetry") == 10
    assert count(db_url, "SELECT count(*) FROM events") == 1
    assert (
        count(
            db_url,
            "SELECT count(*) FROM telemetry WHERE metric = 'voltage_l1' AND value = 999",
        )
        == 0
    )


def test_device_state_only_moves_forward(db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    meter = fleet.meters[0]
    newer = wire.encode(TelemetryBatch(fleet.gateway, meter, 2, (Sample("frequency", now, 50.1),)))
    older = wire.encode(
        TelemetryBatch(fleet.gateway, meter, 1, (Sample("frequency", now - 5000, 49.0),))
    )
    writer = make_writer(db_url, clock)
    try:
        assert writer.store(make_batch(clock, newer)).states_changed == 1
        assert writer.store(make_batch(clock, older)).states_changed == 0
    finally:
        writer.conn.close()
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT value, (extract(epoch FROM ts) * 1000)::bigint FROM device_state "
            "WHERE device_id = %s AND metric = 'frequency'",
            (meter,),
        ).fetchone()
    assert row == (50.1, now)
    assert count(db_url, "SELECT count(*) FROM telemetry") == 2  # history keeps both


def test_redelivered_message_is_not_notified_twice(
    db_url, broker, clock, unique_id, publisher_factory
):
    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    events = wire.encode(
        EventBatch(fleet.gateway, fleet.elevator, 5, (Event("alarm_button", now, 1.0, 0.0),))
    )
    listener = psycopg.connect(db_url, autocommit=True)
    listener.execute(f"LISTEN {notify.EVENTS}")
    pub = publisher_factory(broker.url)
    with running_worker(db_url=db_url, mqtt_url=broker.url, clock=clock) as worker:
        pub.publish(*events)
        assert worker.stats.wait_for(lambda s: s.acked >= 1, timeout=10)
        pub.publish(*events)
        assert worker.stats.wait_for(lambda s: s.acked >= 2, timeout=10)
    notices = list(listener.notifies(timeout=1.0))
    listener.close()
    assert len(notices) == 1
    assert count(db_url, "SELECT count(*) FROM events") == 1


def test_availability_events_are_accepted_for_every_kind(db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    writer = make_writer(db_url, clock)
    try:
        result = writer.store(
            make_batch(
                clock,
                wire.encode(
                    EventBatch(
                        fleet.gateway, fleet.meters[0], 1, (Event("available", now, 0.0, 1.0),)
                    )
                ),
                wire.encode(
                    EventBatch(
                        fleet.gateway, fleet.elevator, 1, (Event("available", now, 1.0, None),)
                    )
                ),
            )
        )
    finally:
        writer.conn.close()
    assert result.events_stored == 2 and result.dead_letters == 0
    assert count(db_url, "SELECT count(*) FROM device_state WHERE metric = 'available'") == 2


def test_a_point_sent_again_with_another_value_is_a_recorded_conflict(db_url, clock, unique_id):
    # ingest issue item 3: the first value stays; the disagreement is recorded, not dropped
    from tests.ingest.conftest import make_batch, make_writer, register_fleet, telemetry
    from vigil import wire
    from vigil.wire import Sample, TelemetryBatch

    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    device = fleet.meters[0]
    first = wire.encode(
        TelemetryBatch(fleet.gateway, device, 1, (Sample("voltage_l1", now, 230.0),))
    )
    again = wire.encode(
        TelemetryBatch(fleet.gateway, device, 2, (Sample("voltage_l1", now, 231.5),))
    )
    same = wire.encode(
        TelemetryBatch(fleet.gateway, device, 3, (Sample("voltage_l1", now, 230.0),))
    )
    writer = make_writer(db_url, clock)
    try:
        writer.store(make_batch(clock, first))
        writer.conn.commit()
        writer.store(make_batch(clock, again))
        writer.conn.commit()
        writer.store(make_batch(clock, same))  # a plain duplicate is no conflict
        writer.conn.commit()
        writer.store(make_batch(clock, telemetry(fleet, device=device, seq=4, start_ms=now + 5)))
    finally:
        writer.conn.close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        stored = conn.execute(
            "SELECT value FROM telemetry WHERE device_id = %s AND metric = 'voltage_l1' "
            "AND ts = to_timestamp(%s / 1000.0)",
            (device, now),
        ).fetchall()
        conflicts = conn.execute(
            "SELECT device_id, metric, kept_value, offered_value FROM telemetry_conflicts"
        ).fetchall()
    assert stored == [(230.0,)]
    assert conflicts == [(device, "voltage_l1", 230.0, 231.5)]
