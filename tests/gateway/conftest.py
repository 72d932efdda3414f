"""Gateway test helpers: configs for simulated fleets, a running gateway, an MQTT collector."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.models import (
    BrokerConfig,
    BufferConfig,
    DeviceConfig,
    Gateway,
    GatewayConfig,
    PollingDefaults,
    build_config,
)
from gateway.service import GatewayService
from simulators.server import Placement
from vigil.clock import FakeClock
from vigil.wire import EventBatch, Message, Rejected, TelemetryBatch, decode


def fleet_config(
    tmp_path: Path,
    *,
    gateway_id: str,
    mqtt_url: str,
    placements: Iterable[Placement],
    poll_s: float = 1.0,
    timeout_s: float = 1.0,
    max_messages: int = 1_000_000,
    health_interval_s: float = 3600.0,
    backoff_max_s: float = 8.0,
    username: str | None = None,
    password: str | None = None,
    protocol: str = "5",
    timeouts: Mapping[str, float] | None = None,
    **device_options: Any,
) -> Gateway:
    """A gateway config polling every simulated device in ``placements`` (``timeouts``: a
    device's own Modbus timeout, by device id)."""
    timeouts = timeouts or {}
    settings = GatewayConfig(
        gateway_id=gateway_id,
        data_dir=tmp_path / "gateway",
        health_interval_s=health_interval_s,
        broker=BrokerConfig(
            url=mqtt_url,
            username=username,
            password=password,
            backoff_initial_s=0.5,
            backoff_max_s=2.0,
            timeout_s=5,
            protocol=protocol,
        ),
        buffer=BufferConfig(max_messages=max_messages),
        polling=PollingDefaults(
            poll_s=poll_s, timeout_s=timeout_s, backoff_initial_s=1.0, backoff_max_s=backoff_max_s
        ),
        devices=[
            DeviceConfig(
                id=p.device_id,
                profile=p.model,
                host=p.host,
                port=p.port,
                unit=p.unit,
                **(
                    device_options
                    | ({"timeout_s": timeouts[p.device_id]} if p.device_id in timeouts else {})
                ),
            )
            for p in placements
        ],
    )
    return build_config(settings)


@contextlib.asynccontextmanager
async def running(config: Gateway, clock: FakeClock) -> AsyncIterator[GatewayService]:
    """A gateway running in this event loop until the block ends (then stopped cleanly)."""
    service = GatewayService(config=config, clock=clock, stagger=False)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        try:
            # longer than the service's own 30 s bound on the broker link's goodbye
            await asyncio.wait_for(task, timeout=45)
        except TimeoutError:
            raise TimeoutError(
                f"the gateway took over 45s to stop (tasks: {service.tasks})"
            ) from None


async def tick(service: GatewayService, clock: FakeClock, *, seconds: float = 1.0) -> None:
    """Advance the clock and wait until every device of the gateway has been polled again."""
    target = service.stats.polls + len(service.devices)
    clock.advance(seconds)
    await _polls(service, target, what=f"the polls of the tick to {clock.now():%H:%M:%S}")


async def first_polls(service: GatewayService) -> None:
    """Wait for the polls made at start."""
    await _polls(service, len(service.devices), what="the first polls")


async def _polls(service: GatewayService, target: int, *, what: str, timeout: float = 20) -> None:
    try:
        await asyncio.wait_for(service.stats.wait_polls(target), timeout=timeout)
    except TimeoutError:
        stats = service.stats
        # said in the message: CI's summary line shows it, and a timeout alone says nothing
        raise TimeoutError(
            f"{what}: {stats.polls} of {target} polls after {timeout}s "
            f"(timeouts {stats.timeouts}, failures {dict(stats.failures)}, "
            f"unavailable {sorted(stats.unavailable)})"
        ) from None


@dataclass(frozen=True)
class Received:
    """One message the collector got."""

    topic: str
    payload: bytes
    message: Message | Rejected


class Collector:
    """An MQTT subscriber with a persistent session: survives broker restarts, decodes all."""

    def __init__(
        self,
        url: str,
        topic_filter: str,
        *,
        clock: FakeClock,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.clock = clock
        self.received: list[Received] = []
        self.seqs: dict[str, set[int]] = defaultdict(set)  # distinct seqs seen per device
        self._firsts: list[TelemetryBatch | EventBatch] = []  # each (device, seq)'s first copy
        self.connects = 0  # connections so far (a broker restart makes one more)
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._subscribed = threading.Event()
        self._filter = topic_filter
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        if username is not None:
            self._client.username_pw_set(username, password)
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        self._client.connect(host, int(port))
        self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(self._filter, qos=1)
        self.connects += 1
        self._loop.call_soon_threadsafe(self._arrived.set)

    def _on_message(self, _client: object, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        decoded = decode(msg.topic, bytes(msg.payload), now_ms=self.clock.now_ms())
        with self._lock:
            self.received.append(Received(msg.topic, bytes(msg.payload), decoded))
            if isinstance(decoded, TelemetryBatch | EventBatch):
                if decoded.seq not in self.seqs[decoded.device]:
                    self._firsts.append(decoded)
                self.seqs[decoded.device].add(decoded.seq)
        self._loop.call_soon_threadsafe(self._arrived.set)

    async def subscribed(self) -> None:
        """Wait for the SUBACK."""
        await asyncio.to_thread(self._subscribed.wait, 10)

    def messages(self) -> list[Received]:
        """Everything received so far."""
        with self._lock:
            return list(self.received)

    def of(self, kind: type) -> list[Any]:
        """Decoded messages of one type."""
        return [r.message for r in self.messages() if isinstance(r.message, kind)]

    def distinct(self, kind: type) -> list[Any]:
        """Batches of one type, each (device, seq) once: QoS 1 may deliver one twice."""
        with self._lock:
            return [batch for batch in self._firsts if isinstance(batch, kind)]

    async def wait_until(
        self, condition: Callable[[Collector], bool], *, timeout: float = 15.0
    ) -> None:
        """Wait until ``condition(self)`` holds (checked on every arrival)."""
        try:
            async with asyncio.timeout(timeout):
                while not condition(self):
                    self._arrived.clear()
                    if condition(self):
                        return
                    await self._arrived.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the collector waited {timeout}s in vain; it holds {self.summary()}"
            ) from None

    def summary(self) -> str:
        """What arrived, counted by kind and device (a failed wait says it)."""
        counts: Counter[str] = Counter()
        for received in self.messages():
            message = received.message
            device = getattr(message, "device", None)
            counts[type(message).__name__ + (f" {device}" if device else "")] += 1
        with self._lock:
            distinct = {device: len(seqs) for device, seqs in self.seqs.items()}
        return f"{dict(sorted(counts.items()))}, distinct seqs {distinct}"

    def close(self) -> None:
        """Disconnect."""
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
async def collect():
    """Factory of collectors, closed after the test."""
    made: list[Collector] = []

    async def make(url: str, topic_filter: str, *, clock: FakeClock, **login: Any) -> Collector:
        collector = Collector(url, topic_filter, clock=clock, **login)
        await collector.subscribed()
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()


def payload_of(received: Received) -> dict[str, Any]:
    """The JSON body of a message."""
    return json.loads(received.payload)


class ModbusProxy:
    """A TCP proxy in front of a real Modbus server that can misbehave on demand.

    Modes: ``forward`` (pass everything through), ``mismatch`` (answer every request itself
    with a well-formed frame of the wrong transaction id: pymodbus skips it, times out and
    raises ModbusIOException), ``exception`` (a Modbus exception answer), ``garbage`` (a frame
    pymodbus cannot decode), ``reset`` (close every connection at once).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "forward"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> ModbusProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while self.mode != "reset":
                header = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                if self.mode in ("exception", "garbage"):
                    # A Modbus exception answer (code 4, device failure), or a frame of an
                    # unknown function code that pymodbus cannot decode.
                    pdu = bytes([body[0] | 0x80, 4]) if self.mode == "exception" else b"\x7f\x00"
                    writer.write(
                        header[0:4] + (len(pdu) + 1).to_bytes(2, "big") + header[6:7] + pdu
                    )
                    continue
                if self.mode == "mismatch":
                    tid = (int.from_bytes(header[0:2], "big") + 1) % 65536
                    count = int.from_bytes(body[3:5], "big")
                    pdu = bytes([body[0], 2 * count]) + bytes(2 * count)
                    writer.write(
                        tid.to_bytes(2, "big")
                        + b"\0\0"
                        + (len(pdu) + 1).to_bytes(2, "big")
                        + header[6:7]
                        + pdu
                    )
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
                upstream[1].write(header + body)
                reply = await upstream[0].readexactly(7)
                reply += await upstream[0].readexactly(int.from_bytes(reply[4:6], "big") - 1)
                writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()
            self._writers.discard(writer)
