"""Valid messages of every channel are stored once, state moves forward, downstream is notified."""

from __future__ import annotations

import psycopg

from tests.ingest.conftest import (
    count,
    register_fleet,
    running_worker,
    store_once,
    telemetry,
)
from vigil import notify, wire
from vigil.notify import CommandNotice, EventNotice, StateNotice
from vigil.wire import CommandResult, Event, EventBatch, Health, Status


def test_every_channel_is_stored_and_notified(db_url, broker, clock, unique_id, publisher_factory):
    fleet = register_fleet(db_url, gateway=unique_id)
    now = clock.now_ms()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO commands (id, device_id, action, issued_by, issued_at) "
            "VALUES ('cmd-1', %s, 'lockout', 'compliance', now())",
            (fleet.elevator,),
        )
    listener = psycopg.connect(db_url, autocommit=True)
    for channel in (notify.EVENTS, notify.STATE, notify.COMMANDS):
        listener.execute(f"LISTEN {channel}")
    pub = publisher_factory(broker.url)
    with running_worker(db_url=db_url, mqtt_url=broker.url, clock=clock) as worker:
        pub.publish(*telemetry(fleet, device=fleet.meters[0], seq=1, start_ms=now - 5000))
        pub.publish(
            *wire.encode(
                EventBatch(
                    fleet.gateway,
                    fleet.elevator,
                    2,
                    (
                        Event("door_state", now - 100, 2.0, 0.0),
                        Event("alarm_button", now - 50, 1.0, 0.0),
                    ),
                )
            )
        )
        pub.publish(
            *wire.encode(
                CommandResult(fleet.gateway, fleet.elevator, "cmd-1", wire.CommandOutcome.DONE, now)
            )
        )
        pub.publish(*wire.encode(Status(fleet.gateway, wire.GatewayState.ONLINE, now)))
        pub.publish(*wire.encode(Health(fleet.gateway, now, 50.0, 1, 2)), qos=0)
        assert worker.stats.wait_for(lambda s: s.received >= 5 and s.acked >= 4, timeout=15)

    assert count(db_url, "SELECT count(*) FROM telemetry") == 10
    assert count(db_url, "SELECT count(*) FROM events") == 2
    assert count(db_url, "SELECT count(*) FROM command_results") == 1
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        state = dict(
            conn.execute(
                "SELECT metric, value FROM device_state WHERE device_id = %s", (fleet.elevator,)
            ).fetchall()
        )
        gw = conn.execute(
            "SELECT state, polls_per_s, errors, buffer_depth FROM gateway_status "
            "WHERE gateway_id = %s",
            (fleet.gateway,),
        ).fetchone()
    assert state == {"door_state": 2.0, "alarm_button": 1.0}
    assert gw == ("online", 50.0, 1, 2)

    notices: list = []
    for note in listener.notifies(timeout=10):
        notices.append(notify.parse(note.channel, note.payload))
        kinds = {type(n) for n in notices}
        if {EventNotice, StateNotice, CommandNotice} <= kinds and len(notices) >= 4:
            break
    listener.close()
    events = [n for n in notices if isinstance(n, EventNotice)]
    assert {(e.metric, e.value, e.previous) for e in events} == {
        ("door_state", 2.0, 0.0),
        ("alarm_button", 1.0, 0.0),
    }
    assert all(e.id > 0 and e.device == fleet.elevator for e in events)
    assert any(isinstance(n, StateNotice) and fleet.meters[0] in n.devices for n in notices)
    assert CommandNotice("cmd-1", fleet.elevator, "done", now) in notices


def test_a_gateway_event_on_the_status_topic_is_kept(db_url, clock, unique_id):
    # gateway issue 12, item 1: a gateway reports buffer_lost; ingest keeps the newest event
    fleet = register_fleet(db_url, gateway=unique_id)
    lost = wire.Status(
        fleet.gateway,
        wire.GatewayState.ONLINE,
        clock.now_ms(),
        wire.GatewayEvent.BUFFER_LOST,
        "buffer missing or empty; epoch 2",
    )
    store_once(db_url, clock, wire.encode(lost))
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT state, last_event, last_event_detail FROM gateway_status WHERE gateway_id = %s",
            (fleet.gateway,),
        ).fetchone()
    assert row == ("online", "buffer_lost", "buffer missing or empty; epoch 2")


def test_a_last_will_dates_the_offline_state_by_its_receipt(db_url, clock, unique_id):
    # gateway issue 12, item 8: the will's ts is the gateway's connect time, fixed at CONNECT
    fleet = register_fleet(db_url, gateway=unique_id)
    connected_ms = clock.now_ms() - 3_600_000  # the gateway connected an hour ago
    will = wire.Status(fleet.gateway, wire.GatewayState.OFFLINE, connected_ms, will=True)
    store_once(db_url, clock, wire.encode(will))
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT state, state_ts FROM gateway_status WHERE gateway_id = %s", (fleet.gateway,)
        ).fetchone()
    assert row == ("offline", clock.now())
