"""The gateway's MQTT session: drains the outbox with QoS 1, takes commands, sends health.

One connection at a time (aiomqtt, MQTT 3.1.1, persistent session under the gateway's client
id so commands sent while it was away are delivered). On connect it publishes the retained
status ``online`` (the last will is the retained ``offline``), subscribes to its own command
topics and starts pumping the outbox: rows are published in id order, up to ``inflight`` at a
time, and deleted when the broker's PUBACK arrives. When the connection fails, whatever was not
acknowledged stays queued and is published again, in order, after the reconnect; reconnection
uses a capped exponential backoff on the injected clock. Polling never waits for the broker:
while it is away, the outbox simply grows (store-and-forward).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.models import BrokerConfig
from gateway.store import Outbox, Queued
from vigil.clock import Clock
from vigil.metrics import BROKER_RECONNECTS
from vigil.tasks import end_if_cancelled
from vigil.wire import Channel, GatewayState, Health, Status, encode, subscription

log = logging.getLogger(__name__)

CommandSink = Callable[[str, bytes, bool], Awaitable[None]]


class _Stopping(Exception):
    """Raised inside a session to end it cleanly."""


class BrokerLink:
    """Keeps one MQTT session alive and moves the outbox through it."""

    def __init__(
        self,
        *,
        gateway_id: str,
        broker: BrokerConfig,
        outbox: Outbox,
        clock: Clock,
        on_command: CommandSink,
        health: Callable[[], Health],
        health_interval_s: float,
    ) -> None:
        self.gateway_id = gateway_id
        self.broker = broker
        self.outbox = outbox
        self.clock = clock
        self.on_command = on_command
        self.health = health
        self.health_interval_s = health_interval_s
        self.connected = asyncio.Event()
        self.sessions = 0  # successful connections so far
        self.published = 0
        self._backoff_s = broker.backoff_initial_s
        self._acked: list[int] = []
        self._ack_due = asyncio.Event()
        self._commands: set[asyncio.Task[None]] = set()
        self._outage_logged = False

    # -- the reconnect loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set; every failure is followed by a backoff retry."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_outage(exc)
            finally:
                self.connected.clear()
                self._flush_acks()
            if stop.is_set():
                break
            delay = self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, self.broker.backoff_max_s)
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                stopper.cancel()
        await self._finish_commands()

    def _note_outage(self, exc: BaseException) -> None:
        if not self._outage_logged:
            log.warning(
                "broker %s unreachable (%s); buffering to %s",
                self.broker.url,
                _describe(exc),
                self.outbox.path,
            )
            self._outage_logged = True
        else:
            log.debug("broker still unreachable: %s", _describe(exc))

    def _client(self) -> aiomqtt.Client:
        # the will's payload is fixed now, at connect: marked as the will, so that ingest dates
        # the offline state by when the broker published it, not by this connect time
        status_topic, offline = encode(
            Status(self.gateway_id, GatewayState.OFFLINE, self.clock.now_ms(), will=True)
        )
        tls = None
        if self.broker.tls:
            tls = ssl.create_default_context(
                cafile=str(self.broker.ca_file) if self.broker.ca_file else None
            )
        if self.broker.protocol == "3.1.1":
            # a persistent session all the same (clean session off): commands sent while away
            # are kept for us as long as the broker keeps the session
            session: dict[str, Any] = {
                "protocol": aiomqtt.ProtocolVersion.V311,
                "clean_session": False,
            }
        else:
            # MQTT v5: a persistent session (commands sent while away are kept for us), and
            # subscriptions that keep the retain flag of what they forward (see _listen)
            session = {
                "protocol": aiomqtt.ProtocolVersion.V5,
                "clean_start": False,
                "properties": _session_properties(self.broker.session_expiry_s),
            }
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.secret(),
            identifier=self.broker.client_id or self.gateway_id,
            **session,
            will=aiomqtt.Will(status_topic, offline, qos=1, retain=True),
            keepalive=self.broker.keepalive_s,
            timeout=self.broker.timeout_s,
            max_inflight_messages=self.broker.inflight,
            tls_context=tls,
        )
        client.pending_calls_threshold = self.broker.inflight + 10  # our window, not a leak
        return client

    async def _session(self, stop: asyncio.Event) -> None:
        client = self._client()  # a fresh client: nothing of an old session is resent by paho
        async with client:
            self.sessions += 1
            if self.sessions > 1:
                BROKER_RECONNECTS.inc()
            self._backoff_s = self.broker.backoff_initial_s
            if self._outage_logged:
                log.info("broker %s reachable again; %d queued", self.broker.url, self.outbox.depth)
            else:
                log.info("connected to %s", self.broker.url)
            self._outage_logged = False
            # Retain As Published: a retained command keeps its flag even when the broker
            # forwards it live, so it is refused then too (never executed)
            commands = subscription(Channel.COMMAND, self.gateway_id)
            if self.broker.protocol == "3.1.1":
                await client.subscribe(commands, qos=1)
            else:
                await client.subscribe(
                    commands, options=SubscribeOptions(qos=1, retainAsPublished=True)
                )
            await self._publish_status(client, GatewayState.ONLINE)
            # Fixed now, not when the task first runs: health keeps to the clock.
            first_health = self.clock.now() + timedelta(seconds=self.health_interval_s)
            self.connected.set()
            pump = _Pump(self, client)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(pump.run())
                    group.create_task(self._listen(client))
                    group.create_task(self._send_health(client, first_at=first_health))
                    group.create_task(self._ack_writer())
                    group.create_task(_raise_when(stop, _Stopping()))
            except* _Stopping:
                pass
            finally:
                self.connected.clear()  # now, not after the client has finished closing
            # Stopping cleanly: let what is in flight be acknowledged, then say goodbye.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pump.settle(), timeout=self.broker.timeout_s)
            self._flush_acks()
            with contextlib.suppress(Exception):
                await self._publish_status(client, GatewayState.OFFLINE)

    async def _publish_status(self, client: aiomqtt.Client, state: GatewayState) -> None:
        topic, payload = encode(Status(self.gateway_id, state, self.clock.now_ms()))
        await client.publish(topic, payload, qos=1, retain=True)

    # -- acknowledgements --------------------------------------------------------------------------

    def acked(self, row_id: int) -> None:
        """The broker acknowledged outbox row ``row_id``."""
        self._acked.append(row_id)
        self.published += 1
        self._ack_due.set()

    async def _ack_writer(self) -> None:
        while True:
            end_if_cancelled()
            await self._ack_due.wait()
            self._ack_due.clear()
            await asyncio.sleep(0)  # let acknowledgements arriving together share a transaction
            self._flush_acks()

    def _flush_acks(self) -> None:
        if self._acked:
            done, self._acked = self._acked, []
            self.outbox.ack(done)

    # -- commands and health -----------------------------------------------------------------------

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            end_if_cancelled()
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            task = asyncio.create_task(self._command(str(message.topic), data, message.retain))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)

    async def _command(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            await self.on_command(topic, payload, retained)
        except Exception:
            log.exception("command on %s could not be handled", topic)

    async def _finish_commands(self) -> None:
        if self._commands:
            await asyncio.wait(set(self._commands), timeout=self.broker.timeout_s)

    async def _send_health(self, client: aiomqtt.Client, *, first_at: datetime) -> None:
        interval = timedelta(seconds=self.health_interval_s)
        due = first_at
        while True:
            await self.clock.sleep_until(due)
            topic, payload = encode(self.health())
            await client.publish(topic, payload, qos=0)
            # the publish's wait_for may have swallowed our cancellation (session ending):
            # without this the loop would sleep through to the next report, and the session
            # (and the gateway's shutdown) would wait for it
            end_if_cancelled()
            due = max(due + interval, self.clock.now())


class _Pump:
    """Publishes outbox rows in id order with a window of unacknowledged messages."""

    def __init__(self, link: BrokerLink, client: aiomqtt.Client) -> None:
        self.link = link
        self.client = client
        self.window = asyncio.Semaphore(link.broker.inflight)
        self.sends: set[asyncio.Task[None]] = set()
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The first failure ends the session; later ones (or one nobody awaited) are expected.
        self.failure.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def run(self) -> None:
        outbox = self.link.outbox
        last_id = 0
        while True:
            end_if_cancelled()
            self.link._flush_acks()
            rows = outbox.peek(after=last_id, limit=self.link.broker.inflight)
            if not rows:
                outbox.changed.clear()
                rows = outbox.peek(after=last_id, limit=self.link.broker.inflight)
            if not rows:
                await self._until(outbox.changed.wait())
                continue
            for row in rows:
                await self._until(self.window.acquire())
                task = asyncio.create_task(self._send(row))
                self.sends.add(task)
                task.add_done_callback(self.sends.discard)
                last_id = row.id

    async def _until(self, waiting: Awaitable[object]) -> None:
        """Await ``waiting`` unless a publish failed first (then raise its error)."""
        waiter = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait({waiter, self.failure}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiter.done():
                waiter.cancel()
        if self.failure.done():
            raise self.failure.exception() or ConnectionError("publish failed")

    async def _send(self, row: Queued) -> None:
        try:
            await self.client.publish(
                row.topic,
                row.payload,
                qos=row.qos,
                retain=row.retain,
                timeout=self.link.broker.timeout_s,
            )
        except Exception as exc:
            if not self.failure.done():
                self.failure.set_exception(exc)
            return
        finally:
            self.window.release()
        self.link.acked(row.id)

    async def settle(self) -> None:
        """Wait for the publishes in flight to be acknowledged (or to fail)."""
        if self.sends:
            await asyncio.wait(set(self.sends))


async def _raise_when(event: asyncio.Event, error: Exception) -> None:
    await event.wait()
    raise error


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _session_properties(expiry_s: int) -> Properties:
    """CONNECT properties: how long the broker keeps our session (and commands) while away."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = expiry_s
    return properties
