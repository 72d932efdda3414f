"""The clustered broker path: gateways publish MQTT 3.1.1 QoS 1 to a 3-node NATS cluster, ingest
workers share durable JetStream consumers. A node killed and restarted and a worker SIGKILLed
mid-stream lose nothing and store nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nats
import paho.mqtt.client as mqtt
import pytest

from ingest.jetstream import MQTT_STREAM, subject_of, topic_of
from ingest.models import IngestStats
from tests.ingest.conftest import count, register_fleet, running_worker, wait_for_count
from vigil import wire
from vigil.clock import RealClock
from vigil.services import NatsCluster, nats_binary
from vigil.wire import Sample, TelemetryBatch

try:
    nats_binary()
except Exception:
    pytest.skip("nats-server is not installed", allow_module_level=True)

PUBLISHED = 400  # messages of one sample each, about 40 a second


@pytest.fixture
def cluster(tmp_path: Path):
    with NatsCluster(tmp_path / "nats", size=3) as running_cluster:
        yield running_cluster


def test_topics_and_subjects_convert_both_ways():
    # NATS maps MQTT's "/" to "." and a "." inside a level to "//" (2.10; 2.9 refuses it)
    assert subject_of("vigil/v1/telemetry/gw-1/lift.7") == "vigil.v1.telemetry.gw-1.lift//7"
    assert subject_of("vigil/v1/events/#") == "vigil.v1.events.>"
    assert (
        topic_of("$MQTT.msgs.vigil.v1.telemetry.gw-1.lift//7") == "vigil/v1/telemetry/gw-1/lift.7"
    )


async def _consumer_ready(url: str, name: str, *, timeout: float = 30.0) -> None:
    """Until the durable consumer exists and a worker waits on it."""
    nc = await nats.connect(servers=url.replace("nats://", "").split(","), connect_timeout=5)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = await js.consumer_info(MQTT_STREAM, name)
                if info.num_waiting > 0:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer {name} never became ready")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


def test_a_node_and_a_worker_killed_mid_stream_lose_and_double_nothing(
    cluster, db_url, unique_id, tmp_path
):
    fleet = register_fleet(db_url, gateway=unique_id, meters=1)
    meter = fleet.meters[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        VIGIL_DATABASE_URL=db_url,
        VIGIL_DATA_DIR=str(tmp_path / "data"),
        VIGIL_INGEST__ACK_WAIT_S="3",  # what a killed worker held comes back after 3 s
        VIGIL_LOG_LEVEL="WARNING",
    )
    doomed = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "ingest", "--workers", "1", "--broker", cluster.url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "doomed.log", "wb"),
        start_new_session=True,
    )
    try:
        asyncio.run(_consumer_ready(cluster.url, "ingest"))
        survivor = IngestStats()
        with running_worker(
            db_url=db_url, mqtt_url=cluster.url, clock=RealClock(), stats=survivor, ack_wait_s=3.0
        ):
            published = _publish_through_chaos(cluster, doomed, fleet.gateway, meter)
            assert published == PUBLISHED
            query = (
                "SELECT count(*) FROM telemetry "
                f"WHERE device_id = '{meter}' AND metric = 'frequency'"
            )
            stored = wait_for_count(db_url, query, PUBLISHED, timeout=90)
        assert stored == PUBLISHED  # every sample, once: (device, metric, ts) is unique
        # the killed worker had taken its share of the work before it died
        assert 0 < survivor.points_stored < PUBLISHED
        assert count(db_url, "SELECT count(*) FROM telemetry_conflicts") == 0
        assert count(db_url, "SELECT count(*) FROM dead_letters") == 0
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)


def _publish_through_chaos(cluster, doomed, gateway: str, meter: str) -> int:
    """Publish PUBLISHED samples to node 1 at a steady rate; meanwhile node 3 is SIGKILLed and
    restarted and the doomed worker SIGKILLed. Returns how many were acknowledged."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{gateway}-pub",
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    client.reconnect_delay_set(min_delay=0.1, max_delay=1)
    client.max_inflight_messages_set(50)
    node = cluster.nodes[0]
    client.connect("127.0.0.1", node.mqtt_port)
    client.loop_start()
    chaos = {
        60: lambda: cluster.nodes[2].kill(),
        140: lambda: os.killpg(doomed.pid, signal.SIGKILL),
        260: lambda: cluster.nodes[2].start(),
    }
    sent = []
    start_ms = int(time.time() * 1000) - 60_000
    try:
        for i in range(PUBLISHED):
            if i in chaos:
                threading.Thread(target=chaos[i]).start()
            topic, payload = wire.encode(
                TelemetryBatch(gateway, meter, i + 1, (Sample("frequency", start_ms + i, 50.0),))
            )
            sent.append(client.publish(topic, payload, qos=1))
            time.sleep(0.025)  # a steady rate, as a gateway sends
        for message in sent:
            message.wait_for_publish(timeout=60)  # acknowledged: stored by a quorum
        return sum(1 for message in sent if message.is_published())
    finally:
        client.disconnect()
        client.loop_stop()
