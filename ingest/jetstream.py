"""NATS JetStream side of ingest: the same contract as ``ingest.consumer.MqttConsumer`` (fill the
inbox, acknowledge only what the writer committed) on a clustered, replicated broker.

Gateways keep publishing MQTT 3.1.1 QoS 1, to the MQTT listener of any node of a NATS cluster.
NATS answers a QoS 1 PUBLISH only after it stored the message in its ``$MQTT_msgs`` stream (a
JetStream stream with interest retention, replicated ``mqtt.stream_replicas`` times: 3), so a
message the gateway saw acknowledged is on a quorum of nodes. Ingest reads that stream through
durable pull consumers (``ingest`` for everything, one ``ingest-urgent-<channel>`` per urgent
channel: NATS 2.9 takes one filter per consumer), shared by every worker: work-queue semantics
across N workers, explicit acks sent only after the batch committed, redelivery after
``ack_wait`` of whatever a dead worker held, and at most ``receive_maximum`` messages unacked per
consumer. Interest retention keeps each message until every durable consumer acknowledged it,
and drops it then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from ingest.models import Delivery, Lane
from vigil.metrics import BROKER_RECONNECTS
from vigil.wire import PREFIX, Channel

log = logging.getLogger(__name__)

MQTT_STREAM = "$MQTT_msgs"  # where NATS keeps every QoS 1/2 message its MQTT clients publish
MQTT_SUBJECT_PREFIX = "$MQTT.msgs."
URGENT_CHANNELS = (Channel.EVENTS, Channel.COMMAND_RESULT, Channel.STATUS)
FETCH_BATCH = 500
FETCH_WAIT_S = 0.5


def subject_of(topic_filter: str) -> str:
    """The NATS subject of an MQTT topic or filter (``/`` → ``.``, ``.`` → ``//``, ``#`` →
    ``>``), as NATS converts them."""
    levels = [level.replace(".", "//") for level in topic_filter.split("/")]
    return ".".join(">" if level == "#" else "*" if level == "+" else level for level in levels)


def topic_of(subject: str) -> str:
    """The MQTT topic a message of ``$MQTT_msgs`` was published on."""
    if subject.startswith(MQTT_SUBJECT_PREFIX):
        subject = subject[len(MQTT_SUBJECT_PREFIX) :]
    return "/".join(level.replace("//", ".") for level in subject.split("."))


def consumers_of(lane: Lane, *, group: str) -> list[tuple[str, str]]:
    """The durable consumers (name, filter subject) a lane reads."""
    if lane is Lane.URGENT:
        return [
            (f"{group}-urgent-{channel}", MQTT_SUBJECT_PREFIX + subject_of(f"{PREFIX}/{channel}/#"))
            for channel in URGENT_CHANNELS
        ]
    return [(group, MQTT_SUBJECT_PREFIX + subject_of("vigil/#"))]


def is_nats(url: str) -> bool:
    """Whether a broker URL names a NATS cluster (``nats://a:4222,b:4222``)."""
    return url.startswith(("nats://", "tls://"))


def servers_of(url: str) -> list[str]:
    """``nats://a:4222,b:4222`` → each server's URL."""
    scheme, _, rest = url.partition("://")
    return [f"{scheme}://{host}" for host in rest.split(",") if host]


class JetStreamConsumer:
    """Receives into ``inbox``; ``ack()`` acknowledges what the writer committed."""

    def __init__(
        self,
        *,
        nats_url: str,
        group: str,
        receive_maximum: int,
        ack_wait_s: float,
        replicas: int,
        inbox: queue.SimpleQueue[Delivery],
        on_subscribed: Callable[[], None] | None = None,
        lane: Lane = Lane.ALL,
    ) -> None:
        self._servers = servers_of(nats_url)
        self._consumers = consumers_of(lane, group=group or "ingest")
        self._receive_maximum = receive_maximum
        self._ack_wait_s = ack_wait_s
        self._replicas = replicas
        self._outage_logged = False
        self.connected = False  # consuming, and no outage since
        self._inbox = inbox
        self._on_subscribed = on_subscribed
        self._pending: dict[int, Any] = {}  # delivery mid → the NATS message to ack
        self._mids = itertools.count(1)
        self._lock = threading.Lock()
        self._acks: list[concurrent.futures.Future[None]] = []
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="ingest-jetstream", daemon=True)
        self.subscribed = threading.Event()

    def start(self) -> None:
        """Connect in the background (retrying until a node answers) and consume."""
        self._thread.start()

    def stop(self, *, end_session: bool = False) -> None:
        """Stop fetching and disconnect; what was not acknowledged is redelivered after
        ``ack_wait`` (the durable consumers stay: they are shared by every worker)."""
        del end_session
        with self._lock:
            sending = list(self._acks)
        for sent in sending:  # the acks of what was committed go out before the connection ends
            with contextlib.suppress(Exception):
                sent.result(timeout=5)
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def ack(self, deliveries: Iterable[Delivery]) -> int:
        """Acknowledge deliveries whose batch committed; returns how many."""
        with self._lock:
            messages = [m for d in deliveries if (m := self._pending.pop(d.mid, None)) is not None]
        if messages:
            sent = asyncio.run_coroutine_threadsafe(_ack_all(messages), self._loop)
            with self._lock:
                self._acks = [f for f in self._acks if not f.done()] + [sent]
        return len(messages)

    # -- the consumer's own event loop -----------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        while not self._stop.is_set():
            try:
                await self._consume()
            except Exception as exc:  # a broker outage is data: said once, tried again
                self.connected = False
                if not self._outage_logged:
                    log.warning("JetStream consumer interrupted (%s); reconnecting", exc)
                    self._outage_logged = True
                else:
                    log.debug("JetStream still unavailable: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _consume(self) -> None:
        assert self._stop is not None
        nc = await nats.connect(
            servers=self._servers,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
        )
        try:
            js = nc.jetstream(timeout=10)
            await self._ensure_stream(js)
            subscriptions = []
            for name, subject in self._consumers:
                config = ConsumerConfig(
                    durable_name=name,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self._ack_wait_s,
                    max_ack_pending=self._receive_maximum,
                    filter_subject=subject,
                )
                subscriptions.append(
                    await js.pull_subscribe(
                        subject, durable=name, stream=MQTT_STREAM, config=config
                    )
                )
            if self._outage_logged:
                log.info("JetStream reachable again")
                self._outage_logged = False
                BROKER_RECONNECTS.inc()
            self.connected = True
            log.info("consuming %s", ", ".join(name for name, _ in self._consumers))
            self.subscribed.set()
            if self._on_subscribed is not None:
                self._on_subscribed()
            await asyncio.gather(*(self._fetch(s) for s in subscriptions))
        finally:
            # acks already sent reach the server; what is unacked is redelivered later
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()

    async def _ensure_stream(self, js: Any) -> None:
        """NATS creates ``$MQTT_msgs`` when the first MQTT client connects; ingest may come first,
        and a durable consumer must exist before the first message (interest retention drops
        what nobody consumes), so it creates the stream exactly as NATS would: the server then
        adopts it."""
        try:
            await js.stream_info(MQTT_STREAM)
            return
        except NotFoundError:
            pass
        config = StreamConfig(
            name=MQTT_STREAM,
            subjects=[MQTT_SUBJECT_PREFIX + ">"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.INTEREST,
            num_replicas=self._replicas,
        )
        with contextlib.suppress(BadRequestError):  # created meanwhile by NATS or a worker
            await js.add_stream(config)

    async def _fetch(self, subscription: Any) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            room = self._receive_maximum - len(self._pending)
            if room <= 0:  # bounded in flight: wait for the writer to commit and ack
                await asyncio.sleep(0.01)
                continue
            try:
                messages = await subscription.fetch(min(FETCH_BATCH, room), timeout=FETCH_WAIT_S)
            except NatsTimeout:
                continue
            for message in messages:
                mid = next(self._mids)
                with self._lock:
                    self._pending[mid] = message
                self._inbox.put(
                    Delivery(
                        topic=topic_of(message.subject),
                        payload=message.data,
                        mid=mid,
                        qos=1,
                        generation=0,
                        redelivered=message.metadata.num_delivered > 1,
                    )
                )


async def _ack_all(messages: list[Any]) -> None:
    for message in messages:
        with contextlib.suppress(Exception):  # a lost ack is a redelivery, stored once anyway
            await message.ack()
