"""Fixtures for ingest tests: a registered fleet, a publisher and in-process workers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg
import pytest

from fleet.factory import FleetFactory
from ingest import flows, service
from ingest.models import Batch, Delivery, IngestStats, Received, WriteResult
from ingest.registry import DeviceRegistry
from ingest.worker import IngestWorker
from vigil import notify, wire
from vigil.broker import broker_address
from vigil.clock import Clock, FakeClock
from vigil.config import IngestSettings
from vigil.wire import Sample, TelemetryBatch

METER_METRICS = ("voltage_l1", "current_l1", "power_total", "frequency", "import_energy")


@dataclass(frozen=True)
class Fleet:
    """A gateway and its registered devices."""

    gateway: str
    meters: tuple[str, ...]
    elevator: str


def register_fleet(url: str, *, gateway: str, meters: int = 3) -> Fleet:
    """Insert a site, a gateway, some energy meters and one elevator."""
    meter_ids = tuple(f"{gateway}-m{i}" for i in range(meters))
    elevator = f"{gateway}-lift"
    with psycopg.connect(url, autocommit=True) as conn:
        registry = FleetFactory(conn, at=FakeClock().now())
        j = registry.jurisdiction(f"j-{gateway}", name="Test")
        site = registry.site(
            code=f"site-{gateway}",
            user_unit=registry.user_unit(f"unit-{gateway}"),
            jurisdiction=j,
            name="Site",
        )
        registry.gateway(gateway, site=site)
        for meter in meter_ids:
            registry.device(meter, site=site, kind="energy_meter", model="DTSU666", gateway=gateway)
        registry.device(elevator, site=site, model="Gen2", gateway=gateway)
    return Fleet(gateway, meter_ids, elevator)


def telemetry(fleet: Fleet, *, device: str, seq: int, start_ms: int, count: int = 10) -> tuple:
    """Topic and payload of a telemetry batch with ``count`` distinct samples."""
    samples = tuple(
        Sample(METER_METRICS[i % len(METER_METRICS)], start_ms + (i // len(METER_METRICS)), 1.0 + i)
        for i in range(count)
    )
    return wire.encode(TelemetryBatch(fleet.gateway, device, seq, samples))


class Publisher:
    """A QoS 1 MQTT v5 publisher that waits for each PUBACK."""

    def __init__(self, url: str) -> None:
        where = broker_address(url)
        host, port = where.host, where.port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if where.username is not None:
            self.client.username_pw_set(where.username, where.password)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish and wait until the broker has it."""
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"broker did not take {topic}"

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher_factory() -> Iterator[Callable[[str], Publisher]]:
    made: list[Publisher] = []

    def make(url: str) -> Publisher:
        made.append(Publisher(url))
        return made[-1]

    yield make
    for p in made:
        p.close()


def start_ingest(
    database_url: str, mqtt_url: str, *args: str, stdout: int | None = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``vigil ingest ARGS`` in a process of its own on this database and broker (20 ms
    flushes; no settings file); its stdout and stderr are pipes."""
    env = {
        **os.environ,
        "VIGIL_DATABASE_URL": database_url,
        "VIGIL_MQTT_URL": mqtt_url,
        "VIGIL_INGEST__FLUSH_INTERVAL_MS": "20",
    }
    env.pop("VIGIL_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "ingest", *args],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def ingest_settings(**overrides: object) -> IngestSettings:
    """Settings for test workers: small batches, quick flushes."""
    base = {"batch_size": 2000, "flush_interval_ms": 50, "maintenance_interval_s": 3600.0}
    base.update(overrides)
    return IngestSettings(**base)


@contextmanager
def running_worker(
    *,
    db_url: str,
    mqtt_url: str,
    clock: Clock,
    index: int = 0,
    stats: IngestStats | None = None,
    **overrides: object,
) -> Iterator[IngestWorker]:
    """An in-process worker, subscribed before the block starts and stopped after it."""
    worker = IngestWorker(
        database_url=db_url,
        mqtt_url=mqtt_url,
        settings=ingest_settings(**overrides),
        clock=clock,
        worker_index=index,
        stats=stats or IngestStats(),
        maintenance=False,
    )
    worker.start()
    try:
        assert worker.wait_subscribed(15), "worker never subscribed"
        yield worker
    finally:
        worker.stop()


def count(url: str, query: str, params: tuple = ()) -> int:
    """The integer a query returns."""
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute(query, params).fetchone()[0])


def wait_for_count(url: str, query: str, expected: int, *, timeout: float = 30.0) -> int:
    """Re-count after every state notification until ``expected`` rows are there."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {notify.STATE}")
        have = int(conn.execute(query).fetchone()[0])
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while have < expected and not deadline.is_set():
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    pass
                have = int(conn.execute(query).fetchone()[0])
        finally:
            timer.cancel()
        return have


def make_batch(clock: Clock, *messages: tuple[str, bytes], redelivered: bool = False) -> Batch:
    """A batch as the collector builds it, from (topic, payload) pairs."""
    batch = Batch()
    for mid, (topic, payload) in enumerate(messages, start=1):
        delivery = Delivery(topic, payload, mid, 1, 0, redelivered)
        decoded = wire.decode(topic, payload, now_ms=clock.now_ms())
        batch.items.append(Received(delivery, decoded, clock.now()))
        batch.points += len(getattr(decoded, "samples", ())) or 1
    return batch


def make_writer(db_url: str, clock: Clock) -> flows.Writer:
    """A writer on its own connection, with the registry loaded."""
    conn = service.connect_writer(db_url)
    registry = DeviceRegistry()
    registry.load(conn)
    conn.commit()
    return flows.Writer(conn=conn, registry=registry, clock=clock)


def store_once(db_url: str, clock: Clock, *messages: tuple[str, bytes]) -> WriteResult:
    """Store one batch of (topic, payload) messages with a writer of its own."""
    writer = make_writer(db_url, clock)
    try:
        return writer.store(make_batch(clock, *messages))
    finally:
        writer.conn.close()
