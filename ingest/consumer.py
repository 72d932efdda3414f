"""MQTT side of ingest: a paho-mqtt v5 client with a persistent session and manual acks.

The broker keeps the session (``clean_start=False`` plus a session expiry) while ingest is down,
and redelivers every PUBLISH that was not acknowledged. Messages are acknowledged only when the
writer says their batch is committed. ``Receive Maximum`` bounds how many unacknowledged messages
the broker sends, so when the database stalls the broker holds the rest (backpressure).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.models import Delivery, Lane
from vigil.broker import broker_address
from vigil.metrics import BROKER_RECONNECTS
from vigil.wire import PREFIX, Channel, subscription

log = logging.getLogger(__name__)

CHANNELS = (
    Channel.TELEMETRY,
    Channel.EVENTS,
    Channel.COMMAND_RESULT,
    Channel.STATUS,
    Channel.HEALTH,
)
# The per-channel filters of earlier versions, plain and in the default group.
LEGACY_FILTERS = [subscription(c) for c in CHANNELS] + [
    f"$share/ingest/{subscription(c)}" for c in CHANNELS
]


DEFAULT_SHARE_GROUP = "ingest"  # the configured default (vigil.config.IngestSettings)


# Everything under vigil/: what ingest cannot parse (a topic with a level too many, vigil/v2/...)
# reaches a dead letter too, so a device maker gets feedback (docs/ingest.md).
ALL_TOPICS = "vigil/#"


# The urgent lane: events (alarm button, doors, fault codes, availability), command results and
# gateway status go through their own subscription and writer, so that an entrapment is stored
# and notified even while telemetry is backlogged (docs/ingest.md, two lanes).
URGENT_CHANNELS = (Channel.EVENTS, Channel.COMMAND_RESULT, Channel.STATUS)
URGENT_TOPIC_PREFIXES = tuple(f"{PREFIX}/{c}/" for c in URGENT_CHANNELS)


def shared_filters(group: str, lane: Lane = Lane.ALL) -> list[str]:
    """Filters of an ingest group (``$share/<group>/vigil/#``); the plain ones if it is empty.
    The urgent lane subscribes to its channels only, in a group of its own."""
    if lane is Lane.URGENT:
        topics = [f"{PREFIX}/{c}/#" for c in URGENT_CHANNELS]
        group = f"{group}-urgent" if group else ""
    else:
        topics = [ALL_TOPICS]
    if not group:
        return topics
    return [f"$share/{group}/{t}" for t in topics]


class MqttConsumer:
    """Receives into ``inbox``; ``ack()`` acknowledges deliveries of the current connection."""

    def __init__(
        self,
        *,
        mqtt_url: str,
        client_id: str,
        share_group: str,
        session_expiry_s: int,
        receive_maximum: int,
        inbox: queue.SimpleQueue[Delivery],
        on_subscribed: Callable[[], None] | None = None,
        drain: bool = False,
        lane: Lane = Lane.ALL,
    ) -> None:
        where = broker_address(mqtt_url)
        self._host, self._port = where.host, where.port
        self._inbox = inbox
        self._filters = shared_filters(share_group, lane)
        # the other form, which an earlier run of the same client may have left in its session
        self._stale_filters = shared_filters("" if share_group else DEFAULT_SHARE_GROUP, lane)
        self._on_subscribed = on_subscribed
        # draining: resume the session of a worker that is no longer run, take what it holds
        # and subscribe to nothing, so that no new message is routed to it
        self._drain = drain
        self._generation = 0
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.client.manual_ack_set(True)
        if where.username is not None:  # the broker's password_file and ACL (vigil-ingest)
            self.client.username_pw_set(where.username, where.password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.connected = False  # the broker accepted us and has not dropped us since
        self.connections = 0
        self._stopping = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._connect_properties = Properties(PacketTypes.CONNECT)
        self._connect_properties.SessionExpiryInterval = session_expiry_s
        self._connect_properties.ReceiveMaximum = receive_maximum

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and subscribe."""
        self.client.connect_async(
            self._host,
            self._port,
            keepalive=30,
            clean_start=False,
            properties=self._connect_properties,
        )
        self.client.loop_start()

    def stop(self, *, end_session: bool = False) -> None:
        """Disconnect; the broker keeps the session and everything unacknowledged, unless
        ``end_session`` (a drained worker's session is then discarded by the broker)."""
        self._stopping = True
        if end_session:
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
            self.client.disconnect(properties=properties)
        else:
            self.client.disconnect()
        self.client.loop_stop()

    def ack(self, deliveries: Iterable[Delivery]) -> int:
        """Acknowledge deliveries received on the current connection; returns how many."""
        done = 0
        with self._lock:
            generation = self._generation
            for delivery in deliveries:
                # After a reconnect the broker redelivers these; an old mid is meaningless now.
                if delivery.qos == 0 or delivery.generation != generation:
                    continue
                self.client.ack(delivery.mid, delivery.qos)
                done += 1
        return done

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        log.info("connected to the broker (session present: %s)", flags.session_present)
        if self.connections:
            BROKER_RECONNECTS.inc()
        self.connections += 1
        self.connected = True
        if flags.session_present:
            # a session kept from a run with another worker count (or with the per-channel
            # filters of earlier versions): drop those so that nothing arrives twice
            client.unsubscribe(self._stale_filters + LEGACY_FILTERS)
        if self._drain:
            client.unsubscribe(self._filters + self._stale_filters + LEGACY_FILTERS)
            self.subscribed.set()  # nothing to subscribe to: what is queued arrives by itself
            return
        options = SubscribeOptions(qos=1)
        client.subscribe([(f, options) for f in self._filters])

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("subscription refused: %s", ", ".join(failed))
            return
        log.info("subscribed to %s", ", ".join(self._filters))
        self.subscribed.set()
        if self._on_subscribed is not None:
            self._on_subscribed()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        with self._lock:
            self._generation += 1
        if self.connected and not self._stopping:
            # expected in operations: one line, no traceback; paho reconnects by itself
            log.warning("lost the broker (%s); reconnecting", reason)
        else:
            log.info("disconnected from the broker: %s", reason)
        self.connected = False

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(
            Delivery(
                topic=message.topic,
                payload=message.payload,
                mid=message.mid,
                qos=message.qos,
                generation=self._generation,
                redelivered=bool(message.dup),
            )
        )
