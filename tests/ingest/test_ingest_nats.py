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
    query = f"SELECT count(*) FROM telemetry WHERE device_id = '{meter}' AND metric = 'frequency'"
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
    publisher = _Publisher(cluster.nodes[0].mqtt_port, fleet.gateway, meter)
    try:
        asyncio.run(_consumer_ready(cluster.url, "ingest"))
        publisher.start()
        # the steps wait for what happened, not for a count of messages sent: under load the
        # doomed worker must have stored some before it dies, whatever the machine's speed
        assert wait_for_count(db_url, query, 40, timeout=60) >= 40
        cluster.nodes[2].kill()  # a node dies mid-stream
        taken = wait_for_count(db_url, query, 80, timeout=60)
        assert taken >= 80
        os.killpg(doomed.pid, signal.SIGKILL)  # and the only worker, holding unacked messages
        survivor = IngestStats()
        with running_worker(
            db_url=db_url, mqtt_url=cluster.url, clock=RealClock(), stats=survivor, ack_wait_s=3.0
        ):
            cluster.nodes[2].start()  # the node comes back while the stream goes on
            published = publisher.finish()
            assert published == PUBLISHED
            stored = wait_for_count(db_url, query, PUBLISHED, timeout=90)
        assert stored == PUBLISHED  # every sample, once: (device, metric, ts) is unique
        # the killed worker's share was stored by it, the rest (and what it held) by the other
        assert survivor.points_stored <= PUBLISHED - taken
        assert count(db_url, "SELECT count(*) FROM telemetry_conflicts") == 0
        assert count(db_url, "SELECT count(*) FROM dead_letters") == 0
    finally:
        publisher.finish()
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)


class _Publisher:
    """Publishes PUBLISHED samples of one meter to a node's MQTT listener at a steady rate (MQTT
    3.1.1 QoS 1, as a gateway configured for NATS), in a thread of its own, and, as a gateway's
    store-and-forward buffer does, sends again what a dropped connection left unacknowledged."""

    def __init__(self, mqtt_port: int, gateway: str, meter: str) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{gateway}-pub",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        self.client.max_inflight_messages_set(50)
        self.client.connect("127.0.0.1", mqtt_port)
        self.gateway, self.meter = gateway, meter
        self.sent: list[tuple[str, bytes, mqtt.MQTTMessageInfo]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._done: int | None = None

    def start(self) -> None:
        self.client.loop_start()
        self._thread.start()

    def _run(self) -> None:
        start_ms = int(time.time() * 1000) - 60_000
        for i in range(PUBLISHED):
            sample = Sample("frequency", start_ms + i, 50.0)
            topic, payload = wire.encode(TelemetryBatch(self.gateway, self.meter, i + 1, (sample,)))
            self.sent.append((topic, payload, self.client.publish(topic, payload, qos=1)))
            time.sleep(0.025)  # a steady rate, as a gateway sends

    def finish(self) -> int:
        """Wait until every sample was acknowledged (stored by a quorum), sending again what
        a dropped connection refused; how many were acknowledged."""
        if self._done is None:
            self._thread.join(timeout=120)
            deadline = time.monotonic() + 90
            pending = list(self.sent)
            while pending and time.monotonic() < deadline:
                retry = []
                for topic, payload, info in pending:
                    try:
                        info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
                    except RuntimeError:  # refused while the connection was down: send again
                        if self.client.is_connected():
                            info = self.client.publish(topic, payload, qos=1)
                        else:
                            time.sleep(0.1)
                    if not info.is_published():
                        retry.append((topic, payload, info))
                pending = retry
            self._done = len(self.sent) - len(pending)
            self.client.disconnect()
            self.client.loop_stop()
        return self._done
