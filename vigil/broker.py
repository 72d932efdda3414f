"""MQTT broker URLs (``mqtt://[user:password@]host[:port]``, ``mqtts://``): the one parser, and
the one publishing client a process builds."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from vigil.metrics import BROKER_RECONNECTS

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker listens, and the credentials the URL carries (if any)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None


def broker_address(url: str) -> BrokerAddress:
    """Parse a broker URL; a ValueError names the URL when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an mqtt://host:port URL: {url!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError(f"not an mqtt://host:port URL: {url!r} ({exc})") from None
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


PUBLISH_TIMEOUT_S = 10.0


class Publisher:
    """The process's one MQTT client for what it publishes (commands, alert messages).

    paho runs the network in its own thread and reconnects by itself; ``publish`` is safe to
    call from worker threads and waits for the broker's acknowledgement (QoS 1).
    """

    def __init__(self, url: str, *, client_id: str = "") -> None:
        self._where = broker_address(url)
        self._connected = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if self._where.username is not None:
            self._client.username_pw_set(self._where.username, self._where.password)
        if self._where.tls:
            self._client.tls_set()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._lock = threading.Lock()
        self._started = False
        self._ever_connected = False
        self._closing = False

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and not lost it since."""
        return self._connected.is_set()

    def _on_connect(self, *args: Any) -> None:
        reason = args[3] if len(args) > 3 else None  # (client, userdata, flags, reason, props)
        if not getattr(reason, "is_failure", False):
            self._connected.set()
            if self._ever_connected:
                BROKER_RECONNECTS.inc()
                log.info("broker %s reachable again", self._where.host)
            self._ever_connected = True

    def _on_disconnect(self, *args: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._closing:
            # an expected event: one line, no traceback; paho reconnects by itself
            log.warning("lost the broker %s:%d; reconnecting", self._where.host, self._where.port)

    def start(self) -> None:
        """Begin connecting in the background (publishing also starts it)."""
        with self._lock:
            if not self._started:
                self._client.connect_async(self._where.host, self._where.port)
                self._client.loop_start()
                self._started = True

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1) -> bool:
        """Publish one message; True once the broker acknowledged it (within the timeout)."""
        self.start()
        if not self._connected.wait(PUBLISH_TIMEOUT_S):
            return False
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        with self._lock:
            if self._started:
                self._closing = True
                self._client.disconnect()
                self._client.loop_stop()
                self._started = False
