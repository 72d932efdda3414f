"""No bad message stops ingest: the codec never raises, the writer isolates what it cannot store,
and a worker whose thread dies stops so that it is restarted (the ingest issue, items 1, 2, 5)."""

from __future__ import annotations

import json

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.models import Delivery, IngestStats, Received
from tests.ingest.conftest import (
    ingest_settings,
    make_batch,
    make_writer,
    register_fleet,
    telemetry,
)
from vigil import wire
from vigil.wire import CommandOutcome, CommandResult, Rejected

BIG = "1" + "0" * 400  # an integer no double can hold


def _topic(channel: str) -> str:
    return f"vigil/v1/{channel}/gw-1/dev-1"


@pytest.mark.parametrize(
    ("channel", "payload"),
    [
        ("telemetry", '{"v":1,"seq":1,"samples":[{"m":"voltage_l1","t":1767600000000,"v":%s}]}'),
        ("events", '{"v":1,"seq":1,"events":[{"m":"door_state","t":1767600000000,"v":%s}]}'),
        ("events", '{"v":1,"seq":1,"events":[{"m":"door_state","t":1767600000000,"v":1,"p":%s}]}'),
    ],
)
def test_an_integer_of_400_digits_is_refused_not_raised(channel, payload):
    # item 1: it raised OverflowError in the decoder and killed the collector thread
    decoded = wire.decode(_topic(channel), (payload % BIG).encode(), now_ms=1_767_600_000_000)
    assert isinstance(decoded, Rejected)


def test_a_lone_surrogate_a_byte_order_mark_are_refused():
    # item 2: the lenient fallback parser let a lone surrogate through to PostgreSQL
    result = '{"v":1,"id":"c-1","outcome":"done","ts":1767600000000,"detail":"x\\ud800y"}'
    decoded = wire.decode(_topic("cmd-result"), result.encode(), now_ms=1_767_600_000_000)
    assert isinstance(decoded, Rejected) and decoded.reason == "malformed_json"
    good = '{"v":1,"seq":1,"samples":[{"m":"voltage_l1","t":1767600000000,"v":230.0}]}'
    bom = b"\xef\xbb\xbf" + good.encode()
    assert isinstance(wire.decode(_topic("telemetry"), bom, now_ms=1_767_600_000_000), Rejected)
    assert not isinstance(
        wire.decode(_topic("telemetry"), good.encode(), now_ms=1_767_600_000_000), Rejected
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "v",
                    "seq",
                    "samples",
                    "events",
                    "m",
                    "t",
                    "p",
                    "q",
                    "id",
                    "outcome",
                    "ts",
                    "detail",
                    "state",
                ]
            )
            | st.text(),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)
channels = st.sampled_from(["telemetry", "events", "cmd-result", "status", "health", "cmd"])


@settings(max_examples=300, deadline=None)
@given(
    channel=channels,
    raw=st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)
def test_the_decoder_never_raises(channel, raw):
    # items 1-2: whatever arrives, decoding gives a message or a refusal with a reason
    decoded = wire.decode(_topic(channel), raw, now_ms=1_767_600_000_000)
    assert decoded is not None


def _poisoned_result(fleet, clock) -> Received:
    """A command result whose text PostgreSQL cannot hold (as a lenient decoder would give)."""
    message = CommandResult(
        fleet.gateway, fleet.elevator, "cmd-1", CommandOutcome.DONE, clock.now_ms(), "x\ud800y"
    )
    topic = wire.topic(wire.Channel.COMMAND_RESULT, fleet.gateway, fleet.elevator)
    return Received(Delivery(topic, b"{}", 99, 1, 0, False), message, clock.now())


def test_a_batch_the_database_cannot_take_is_split_and_the_poison_dead_lettered(
    db_url, clock, unique_id
):
    # item 2: UnicodeEncodeError is not a psycopg.Error: the writer retried it forever
    fleet = register_fleet(db_url, gateway=unique_id)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO commands (id, device_id, action, reason, issued_by, issued_at) "
            "VALUES ('cmd-1', %s, 'lockout', 'test', 'test', now())",
            (fleet.elevator,),
        )
    now = clock.now_ms()
    batch = make_batch(clock, telemetry(fleet, device=fleet.meters[0], seq=1, start_ms=now - 50))
    batch.items.append(_poisoned_result(fleet, clock))
    writer = make_writer(db_url, clock)
    try:
        result = writer.store(batch)
    finally:
        writer.conn.close()
    assert result.points_stored == 10
    assert result.rejected == ("storage_error",)
    with psycopg.connect(db_url, autocommit=True) as conn:
        reason, detail = conn.execute("SELECT reason, detail FROM dead_letters").fetchone()
    assert reason == "storage_error" and "UnicodeEncodeError" in detail


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    channel=channels,
    raw=st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)
def test_the_writer_keeps_storing_whatever_arrives(db_url, clock, unique_id, channel, raw):
    # items 1-2 as a property: any bytes beside a good message; the good one is stored
    fleet = _fleet(db_url, unique_id)
    now = clock.now_ms()
    seq = _next_seq()
    topic = f"vigil/v1/{channel}/{fleet.gateway}/{fleet.meters[1]}"
    batch = make_batch(
        clock,
        (topic, raw),
        telemetry(fleet, device=fleet.meters[0], seq=seq, start_ms=now - seq * 100),
    )
    writer = make_writer(db_url, clock)
    try:
        result = writer.store(batch)
    finally:
        writer.conn.close()
    assert result.points_stored >= 10


_fleets: dict[str, object] = {}
_seq = [0]


def _fleet(db_url, unique_id):
    key = db_url + unique_id
    if key not in _fleets:
        _fleets[key] = register_fleet(db_url, gateway=unique_id)
    return _fleets[key]


def _next_seq() -> int:
    _seq[0] += 1
    return _seq[0]


def test_a_worker_whose_thread_dies_stops_and_says_why(db_url, mqtt_url, clock, unique_id):
    # item 2: a dead collector left the process up and ingest silent; now the worker stops,
    # says why (health shows it stalled), and run_ingest's caller restarts it
    from ingest.worker import IngestWorker

    register_fleet(db_url, gateway=unique_id)
    stats = IngestStats()
    worker = IngestWorker(
        database_url=db_url,
        mqtt_url=mqtt_url,
        settings=ingest_settings(client_id=f"poison-{unique_id}"),
        clock=clock,
        stats=stats,
        maintenance=False,
    )
    worker.start()
    try:
        assert worker.wait_subscribed(15)
        worker._inbox.put(object())  # not a delivery: the collector thread fails on it
        assert worker.failed.wait(15)
    finally:
        worker.stop()
    assert "collector" in (worker.failure or "")
    assert stats.stalled == worker.failure
    assert not any(t.is_alive() for t in worker._threads)
