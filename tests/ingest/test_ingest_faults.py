"""Fault acceptance: SIGKILL mid-stream, database restart mid-stream, two workers sharing load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from ingest import flows, worker
from ingest.models import IngestStats
from tests.ingest.conftest import (
    Publisher,
    count,
    ingest_settings,
    register_fleet,
    running_worker,
    telemetry,
    wait_for_count,
)
from vigil import notify, wire
from vigil.clock import RealClock
from vigil.wire import Event, EventBatch

SAMPLES = 10  # per telemetry message


class _Stream:
    """Publishes messages from a thread, each confirmed by the broker; counts progress."""

    def __init__(self, url: str, messages: list[tuple[str, bytes]]) -> None:
        self.published = 0
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(url, messages), daemon=True)
        self._thread.start()

    def _run(self, url: str, messages: list[tuple[str, bytes]]) -> None:
        pub = Publisher(url)
        try:
            for topic, payload in messages:
                pub.publish(topic, payload)
                with self._progress:
                    self.published += 1
                    self._progress.notify_all()
        finally:
            pub.close()

    def wait_for(self, n: int, timeout: float = 30.0) -> bool:
        """Block until ``n`` messages are published."""
        with self._progress:
            return self._progress.wait_for(lambda: self.published >= n, timeout)

    def join(self, timeout: float = 60.0) -> bool:
        """Wait for the end of the stream; True when every message was published."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _messages(fleet, *, now_ms: int, n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        meter = fleet.meters[i % len(fleet.meters)]
        out.append(
            telemetry(fleet, device=meter, seq=i, start_ms=now_ms - 100_000 + i * 10, count=SAMPLES)
        )
        if i % 10 == 0:
            out.append(
                wire.encode(
                    EventBatch(
                        fleet.gateway,
                        fleet.elevator,
                        i,
                        (Event("door_state", now_ms - 100_000 + i, float(i % 4), None),),
                    )
                )
            )
    return out


@contextmanager
def _ingest_process(db_url: str, mqtt_url: str) -> Iterator[subprocess.Popen]:
    env = {
        **os.environ,
        "VIGIL_DATABASE_URL": db_url,
        "VIGIL_MQTT_URL": mqtt_url,
        "VIGIL_INGEST__BATCH_SIZE": "100",
        "VIGIL_INGEST__FLUSH_INTERVAL_MS": "20",
        "VIGIL_INGEST__RECEIVE_MAXIMUM": "20",
    }
    env.pop("VIGIL_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "ingest", "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    subscribed = threading.Semaphore(0)
    lines: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "subscribed to" in line:
                subscribed.release()

    threading.Thread(target=drain, daemon=True).start()
    try:
        for _ in range(2):  # the telemetry lane and the urgent lane, each a process
            assert subscribed.acquire(timeout=30), "ingest did not subscribe:\n" + "".join(
                lines[-20:]
            )
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def test_sigkill_mid_stream_then_restart_stores_everything_once(db_url, broker, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id, meters=4)
    messages = _messages(fleet, now_ms=RealClock().now_ms(), n=300)
    expected_points = 300 * SAMPLES
    with _ingest_process(db_url, broker.url) as first:
        publisher = _Stream(broker.url, messages)
        # some batches are committed, others are in flight: kill it like a crash would
        assert wait_for_count(db_url, "SELECT count(*) FROM telemetry", 300) >= 300
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    stored_at_kill = count(db_url, "SELECT count(*) FROM telemetry")
    assert stored_at_kill < expected_points, "the kill came too late to test anything"
    with _ingest_process(db_url, broker.url):
        assert publisher.join()
        have = wait_for_count(db_url, "SELECT count(*) FROM telemetry", expected_points)
        # events take their own lane (and writer): they may land after the telemetry
        events = wait_for_count(db_url, "SELECT count(*) FROM events", 30)
    assert have == expected_points
    assert events == count(db_url, "SELECT count(*) FROM events") == 30
    with psycopg.connect(db_url, autocommit=True) as conn:
        per_device = dict(
            conn.execute("SELECT device_id, count(*) FROM telemetry GROUP BY device_id").fetchall()
        )
    assert per_device == {m: 75 * SAMPLES for m in fleet.meters}
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0


def test_database_restart_mid_stream_loses_and_duplicates_nothing(
    private_postgres, broker, clock, unique_id
):
    url = private_postgres.url("vigil")
    fleet = register_fleet(url, gateway=unique_id, meters=3)
    messages = _messages(fleet, now_ms=clock.now_ms(), n=120)
    with running_worker(
        db_url=url,
        mqtt_url=broker.url,
        clock=clock,
        batch_size=50,
        flush_interval_ms=20,
        receive_maximum=30,
    ) as worker:
        half = len(messages) // 2
        first = _Stream(broker.url, messages[:half])
        assert worker.stats.wait_for(lambda s: s.acked >= 10, timeout=20)
        private_postgres.stop(mode="fast")  # mid-stream: batches of the first half in flight
        assert worker.stats.wait_for(lambda s: not s.database_up, timeout=20)
        acked_while_down = worker.stats.acked
        assert first.join()
        # the stream goes on while the database is down: the broker takes and holds what ingest
        # cannot store; ingest acknowledges nothing and holds at most receive_maximum unacked
        second = _Stream(broker.url, messages[half:])
        assert second.join()
        assert worker.stats.acked == acked_while_down < len(messages)
        assert worker.stats.received <= acked_while_down + 30
        private_postgres.start()
        assert worker.stats.wait_for(
            lambda s: s.database_up and s.acked >= len(messages), timeout=60
        ), worker.stats
    assert count(url, "SELECT count(*) FROM telemetry") == 120 * SAMPLES
    assert count(url, "SELECT count(*) FROM events") == 12
    assert count(url, "SELECT count(*) FROM dead_letters") == 0


def test_two_workers_on_a_shared_subscription_split_the_load(
    db_url, broker, clock, unique_id, publisher_factory
):
    fleet = register_fleet(db_url, gateway=unique_id, meters=4)
    messages = _messages(fleet, now_ms=clock.now_ms(), n=80)
    pub = publisher_factory(broker.url)
    changed = threading.Condition()  # both workers' counters wake the same waiters
    with (
        running_worker(
            db_url=db_url,
            mqtt_url=broker.url,
            clock=clock,
            index=0,
            stats=IngestStats(_changed=changed),
            workers=2,
        ) as one,
        running_worker(
            db_url=db_url,
            mqtt_url=broker.url,
            clock=clock,
            index=1,
            stats=IngestStats(_changed=changed),
            workers=2,
        ) as two,
    ):
        for topic, payload in messages:
            pub.publish(topic, payload)
        assert one.stats.wait_for(
            lambda s: s.acked + two.stats.acked >= len(messages), timeout=20
        ), (one.stats, two.stats)
        assert one.stats.messages_stored > 0 and two.stats.messages_stored > 0
        assert one.stats.messages_stored + two.stats.messages_stored == len(messages)
        assert one.stats.points_duplicate + two.stats.points_duplicate == 0
    assert count(db_url, "SELECT count(*) FROM telemetry") == 80 * SAMPLES
    assert count(db_url, "SELECT count(*) FROM events") == 8


@pytest.mark.parametrize("share_group", ["ingest", ""], ids=["shared", "plain"])
def test_broker_restart_mid_stream_keeps_the_session_and_loses_nothing(
    db_url, broker, clock, unique_id, share_group
):
    fleet = register_fleet(db_url, gateway=unique_id, meters=3)
    messages = _messages(fleet, now_ms=clock.now_ms(), n=120)
    half = len(messages) // 2
    with running_worker(
        db_url=db_url,
        mqtt_url=broker.url,
        clock=clock,
        batch_size=50,
        flush_interval_ms=20,
        receive_maximum=20,
        share_group=share_group,
        workers=2 if share_group else 1,  # a single worker never shares
    ) as worker:
        assert _Stream(broker.url, messages[:half]).join()
        assert worker.stats.wait_for(lambda s: s.acked >= 5, timeout=20)
        worker.consumer.subscribed.clear()
        broker.restart()  # the worker's session and unacknowledged messages survive it
        if share_group:
            # Mosquitto 2.0 does not restore shared subscriptions from its persistence file:
            # until the worker has subscribed again, new messages have nowhere to go.
            assert worker.consumer.subscribed.wait(15)
        assert _Stream(broker.url, messages[half:]).join()
        stored = wait_for_count(db_url, "SELECT count(*) FROM telemetry", 120 * SAMPLES)
        assert worker.stats.wait_for(lambda s: s.messages_stored >= len(messages), timeout=20)
    assert stored == 120 * SAMPLES
    assert count(db_url, "SELECT count(*) FROM events") == 12


def test_a_single_worker_subscribes_plainly_whatever_the_group(db_url, broker, clock):
    # ingest issue item 6: with one worker the default group "ingest" used to mean a shared
    # subscription, which Mosquitto loses across its restart (23 messages in one run)
    from ingest.worker import IngestWorker
    from vigil.config import IngestSettings

    one = IngestWorker(
        database_url=db_url, mqtt_url=broker.url, settings=IngestSettings(), clock=clock
    )
    assert IngestSettings().share_group == "ingest"
    assert one.consumer._filters and not any(f.startswith("$share/") for f in one.consumer._filters)
    several = IngestWorker(
        database_url=db_url,
        mqtt_url=broker.url,
        settings=IngestSettings(workers=2),
        clock=clock,
    )
    assert all(f.startswith("$share/ingest/") for f in several.consumer._filters)


def test_ingest_says_when_the_broker_cannot_bridge_a_database_outage(db_url, clock, unique_id):
    # ingest issue item 8: with Mosquitto's stock queue (1000 per session) a 30 s outage at the
    # fleet's rate dropped 4,269 messages at the broker; now the start says so
    from datetime import timedelta

    from vigil.config import IngestSettings

    register_fleet(db_url, gateway=unique_id)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO gateway_status (gateway_id, polls_per_s, health_ts, updated_at) "
            "VALUES (%s, 150, %s, %s)",
            (unique_id, clock.now() - timedelta(minutes=1), clock.now()),
        )
        stock = IngestSettings(outage_tolerance_s=30)
        warning = flows.check_broker_capacity(conn, settings=stock, now=clock.now())
        assert warning is not None and "4500" in warning and "max_queued_messages" in warning
        # two workers share the load; an unlimited or large enough queue is fine
        shared = IngestSettings(outage_tolerance_s=30, workers=2, broker_max_queued_messages=3000)
        assert flows.check_broker_capacity(conn, settings=shared, now=clock.now()) is None
        unlimited = IngestSettings(outage_tolerance_s=30, broker_max_queued_messages=0)
        assert flows.check_broker_capacity(conn, settings=unlimited, now=clock.now()) is None
        # health older than ten minutes is no measure of the rate
        later = clock.now() + timedelta(minutes=20)
        assert flows.check_broker_capacity(conn, settings=stock, now=later) is None


def test_scaling_down_drains_and_ends_the_removed_workers_sessions(
    db_url, broker, clock, unique_id, publisher_factory
):
    # ingest issue item 7: after --workers 2 then --workers 1, the stopped worker's session
    # kept receiving half of all messages (unstored) until it expired
    from ingest import service

    fleet = register_fleet(db_url, gateway=unique_id, meters=4)
    messages = _messages(fleet, now_ms=clock.now_ms(), n=100)
    first, later = messages[:60], messages[60:]
    client_id = f"ing-{unique_id}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        for index in (0, 1):
            service.register_session(conn, client_id=f"{client_id}-{index}", at=clock.now())
    pub = publisher_factory(broker.url)
    common = {"db_url": db_url, "mqtt_url": broker.url, "clock": clock, "client_id": client_id}
    with running_worker(index=0, workers=2, **common) as staying:
        with running_worker(index=1, workers=2, **common):
            pass  # worker 1 runs once, then is gone: its session stays at the broker
        for topic, payload in first:
            pub.publish(topic, payload)
        drained = worker.drain_removed_sessions(
            database_url=db_url,
            mqtt_url=broker.url,
            settings=ingest_settings(client_id=client_id, workers=1),
            clock=clock,
            quiet_s=1.0,
        )
        assert list(drained) == [f"{client_id}-1"]
        assert drained[f"{client_id}-1"] > 0  # its share of the shared subscription was waiting
        stored = wait_for_count(db_url, "SELECT count(*) FROM telemetry", _points(first))
        assert stored == _points(first)
        # the removed session is gone: everything published now reaches the staying worker
        for topic, payload in later:
            pub.publish(topic, payload)
        stored = wait_for_count(db_url, "SELECT count(*) FROM telemetry", _points(messages))
        assert stored == _points(messages)
        assert staying.stats.messages_stored > 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert service.registered_sessions(conn, prefix=client_id) == [f"{client_id}-0"]


def _points(messages: list[tuple[str, bytes]]) -> int:
    return SAMPLES * sum(1 for topic, _ in messages if "/telemetry/" in topic)


def test_an_alarm_is_stored_and_notified_while_telemetry_is_stuck(db_url, broker, clock, unique_id):
    # ingest issue item 9: events (alarm button, doors, fault codes) have their own lane, so an
    # entrapment reaches rescue detection while telemetry waits (here: a table lock)
    fleet = register_fleet(db_url, gateway=unique_id)
    stop = threading.Event()
    thread = threading.Thread(
        target=worker.run_ingest,
        kwargs={
            "database_url": db_url,
            "mqtt_url": broker.url,
            "settings": ingest_settings(client_id=f"lanes-{unique_id}"),
            "clock": clock,
            "stop_event": stop,
        },
    )
    now = clock.now_ms()
    alarm = wire.encode(
        EventBatch(fleet.gateway, fleet.elevator, 1, (Event("alarm_button", now, 1.0, 0.0),))
    )
    with (
        psycopg.connect(db_url, autocommit=True) as listener,
        psycopg.connect(db_url) as blocker,
    ):
        listener.execute(f"LISTEN {notify.EVENTS}")
        thread.start()
        try:
            # warm up until both lanes are subscribed: a telemetry message and an event through
            pub = Publisher(broker.url)
            for seq in range(1, 200):
                pub.publish(*telemetry(fleet, device=fleet.meters[0], seq=seq, start_ms=now - seq))
                if wait_for_count(db_url, "SELECT count(*) FROM telemetry", 1, timeout=0.2):
                    break
            for k in range(1, 200):  # door events, each new, until one is notified
                door = float(2 * (k % 2))
                event = Event("door_state", now - 300 + k, door, 2.0 - door)
                pub.publish(
                    *wire.encode(EventBatch(fleet.gateway, fleet.elevator, 1000 + k, (event,)))
                )
                if list(listener.notifies(timeout=0.2, stop_after=1)):
                    break
            stored = wait_for_count(db_url, "SELECT count(*) FROM telemetry", 10)
            blocker.execute("LOCK TABLE telemetry_rows IN ACCESS EXCLUSIVE MODE")
            pub.publish(*telemetry(fleet, device=fleet.meters[1], seq=500, start_ms=now - 400))
            pub.publish(*alarm)
            # the alarm is committed and notified although telemetry cannot be written
            notes = [n.payload for n in listener.notifies(timeout=20, stop_after=1)]
            while notes and "alarm_button" not in notes[-1]:
                notes += [n.payload for n in listener.notifies(timeout=20, stop_after=1)]
            assert notes and "alarm_button" in notes[-1]
            assert blocker.execute("SELECT count(*) FROM telemetry").fetchone()[0] == stored
            blocker.rollback()  # the lock goes: the stuck telemetry follows
            after = wait_for_count(db_url, "SELECT count(*) FROM telemetry", stored + 10)
            assert after == stored + 10
            pub.close()
        finally:
            stop.set()
            thread.join(timeout=30)
    assert not thread.is_alive()
