"""Maintenance runner: sweeps on a schedule and on relevant events, publishes lockout commands.

A full sweep runs every ``compliance.sweep_interval_s`` of clock time. Between sweeps, a stored
event that bears on maintenance (inspection mode, car-top or pit station, lockout state), a
command result or a new maintenance record triggers a sweep of that elevator at once. Lockout
and release commands wait in ``compliance_outbox`` and are published to
``vigil/v1/cmd/{gateway}/{device}`` with QoS 1 (rule M6); a lockout is re-sent every retry
interval until the controller reports it applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from psycopg.rows import dict_row

from compliance.maintenance import flows, service
from compliance.maintenance.models import SweepResult
from vigil import notify
from vigil.clock import Clock, sleep_or_event, to_ms
from vigil.config import Settings
from vigil.wire import Command, CommandAction, encode

log = logging.getLogger(__name__)

# Events whose arrival can change a verdict or an escalation state.
RELEVANT_METRICS = frozenset(
    {"service_mode", "car_top_inspection", "pit_inspection", "lockout_state"}
)
# Rule M6: what the platform reads to see that a car is safe to lock out; their changes matter
# for the lifts whose lockout is pending.
SAFETY_METRICS = frozenset({"car_status", "door_zone", "door_state", "passengers"})
PUBLISH_TIMEOUT_S = 10.0


class Publisher:
    """A paho MQTT client that publishes commands with QoS 1 and waits for the broker's ack."""

    def __init__(self, url: str, *, client_id: str = "") -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 1883
        self._connected = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_connect = lambda *_: self._connected.set()
        self._client.on_disconnect = lambda *_: self._connected.clear()
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._started = False

    def _ensure(self) -> bool:
        if not self._started:
            self._client.connect_async(self._host, self._port)
            self._client.loop_start()
            self._started = True
        return self._connected.wait(PUBLISH_TIMEOUT_S)

    def publish(self, command: Command) -> bool:
        """Publish one command; True once the broker acknowledged it."""
        if not self._ensure():
            return False
        topic, payload = encode(command)
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()


def publish_due(conn: psycopg.Connection, *, publisher: Publisher, now: datetime) -> int:
    """Publish the commands due in the outbox; rows are claimed so two engines never both send."""
    sent = 0
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT o.command_id, o.repeat_minutes, c.device_id, c.action, c.reason, "
            "d.gateway_id, maintenance_car_is_safe(c.device_id, false) AS car_safe "
            "FROM compliance_outbox o "
            "JOIN commands c ON c.id = o.command_id JOIN devices d ON d.id = c.device_id "
            "WHERE NOT o.done AND o.next_publish_at <= %s ORDER BY o.next_publish_at "
            "FOR UPDATE OF o SKIP LOCKED LIMIT 500",
            (now,),
        ).fetchall()
        for row in rows:
            if row["gateway_id"] is None:
                log.warning("command %s: %s has no gateway", row["command_id"], row["device_id"])
                continue
            if row["action"] == CommandAction.LOCKOUT and row["car_safe"] is not True:
                # rule M6: sent only when the platform itself sees an idle, empty car in a door
                # zone (the controller then opens the doors and applies it); retried later, or
                # at once when the car's state changes
                service.defer_publication(
                    conn, command_id=row["command_id"], now=now, minutes=row["repeat_minutes"]
                )
                continue
            command = Command(
                gateway=row["gateway_id"],
                device=row["device_id"],
                command_id=row["command_id"],
                action=CommandAction(row["action"]),
                ts=to_ms(now),
                reason=row["reason"],
            )
            if not publisher.publish(command):
                log.warning("command %s not acknowledged by the broker; will retry", command)
                break
            service.mark_published(
                conn, command_id=row["command_id"], at=now, repeat_minutes=row["repeat_minutes"]
            )
            sent += 1
    return sent


def next_publication(conn: psycopg.Connection) -> datetime | None:
    """When the next outbox command is due."""
    row = conn.execute(
        "SELECT min(next_publish_at) FROM compliance_outbox WHERE NOT done"
    ).fetchone()
    return row[0] if row else None


def sweep_devices(conn: psycopg.Connection, *, devices: set[str], now: datetime) -> SweepResult:
    """Judge late evidence of these elevators again, sweep them, and bring their deferred
    lockouts forward (their car may have become safe to lock out)."""
    for device_id in sorted(devices):
        flows.rejudge_device(conn, device_id=device_id, now=now)
    result = flows.sweep(conn, now=now, device_ids=sorted(devices))
    service.expedite_lockouts(conn, device_ids=sorted(devices), now=now)
    return result


async def _listen(
    listener: notify.Listener, *, dirty: set[str], wake: asyncio.Event, pending: set[str]
) -> None:
    """Collect the elevators that relevant notifications name, and wake the loop."""
    async for notice in listener:
        device: str | None = None
        if isinstance(notice, notify.EventNotice):
            if notice.metric in RELEVANT_METRICS or (
                notice.metric in SAFETY_METRICS and notice.device in pending
            ):
                device = notice.device
        elif isinstance(notice, notify.CommandNotice):
            device = notice.device
        elif isinstance(notice, dict) and isinstance(notice.get("device"), str):
            device = notice["device"]
        if device is not None:
            dirty.add(device)
            wake.set()


async def run(
    *,
    database_url: str,
    mqtt_url: str,
    clock: Clock,
    settings: Settings,
    stop: asyncio.Event,
) -> None:
    """Sweep, react to events and publish commands until ``stop`` is set."""
    interval = timedelta(seconds=settings.compliance.sweep_interval_s)
    dirty: set[str] = set()
    pending: set[str] = set()  # lifts whose lockout waits for a safe car (rule M6)
    wake = asyncio.Event()
    publisher = Publisher(mqtt_url)
    channels = [notify.EVENTS, notify.COMMANDS, notify.MAINTENANCE]
    conn = await asyncio.to_thread(psycopg.connect, database_url, autocommit=True)
    try:
        async with notify.Listener(database_url, channels) as listener:
            listening = asyncio.create_task(
                _listen(listener, dirty=dirty, wake=wake, pending=pending)
            )
            try:
                next_full = clock.now()
                while not stop.is_set():
                    wake.clear()
                    now = clock.now()
                    if now >= next_full:
                        dirty.clear()
                        result = await asyncio.to_thread(flows.sweep, conn, now=now)
                        next_full = now + interval  # if skipped, another engine just swept
                        _report(result)
                    elif dirty:
                        devices = set(dirty)
                        dirty.clear()
                        result = await asyncio.to_thread(
                            sweep_devices, conn, devices=devices, now=now
                        )
                        if result.skipped:
                            dirty.update(devices)  # another engine was sweeping: try again
                        _report(result)
                    await asyncio.to_thread(publish_due, conn, publisher=publisher, now=now)
                    pending.clear()
                    pending.update(await asyncio.to_thread(service.lockouts_pending, conn))
                    due = await asyncio.to_thread(next_publication, conn)
                    wait_until = min(next_full, due) if due is not None else next_full
                    if dirty and not wake.is_set():
                        wait_until = min(wait_until, clock.now() + timedelta(seconds=1))
                    seconds = (wait_until - clock.now()).total_seconds()
                    if seconds > 0 and not wake.is_set():
                        await _wait(clock=clock, seconds=seconds, wake=wake, stop=stop)
            finally:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listening
    finally:
        await asyncio.to_thread(publisher.close)
        await asyncio.to_thread(conn.close)


async def _wait(*, clock: Clock, seconds: float, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Sleep ``seconds`` of clock time unless woken by a notification or stopped."""
    waker = asyncio.ensure_future(wake.wait())
    try:
        done_early = asyncio.ensure_future(sleep_or_event(clock, seconds=seconds, events=(stop,)))
        await asyncio.wait({waker, done_early}, return_when=asyncio.FIRST_COMPLETED)
        done_early.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await done_early
    finally:
        waker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waker


def _report(result: SweepResult) -> None:
    for transition in result.transitions:
        log.info("%s: %s -> %s", transition.device_id, transition.previous_state, transition.state)
