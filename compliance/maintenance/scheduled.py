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
import random
from datetime import datetime, timedelta
from typing import Protocol

import psycopg

from compliance.maintenance import flows, service
from compliance.maintenance.models import SweepResult
from vigil import notify
from vigil.clock import Clock, sleep_or_event, to_ms
from vigil.resources import Resources
from vigil.tasks import every
from vigil.wire import Command, CommandAction, encode

log = logging.getLogger(__name__)

# Events whose arrival can change a verdict or an escalation state.
RELEVANT_METRICS = frozenset(
    {"service_mode", "car_top_inspection", "pit_inspection", "lockout_state"}
)
# Rule M6: what the platform reads to see that a car is safe to lock out; their changes matter
# for the lifts whose lockout is pending.
SAFETY_METRICS = frozenset({"car_status", "door_zone", "door_state", "passengers"})


class CommandPublisher(Protocol):
    """What publishes a command: the process's MQTT client (``vigil.broker.Publisher``)."""

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1) -> bool: ...


def publish_due(conn: psycopg.Connection, *, publisher: CommandPublisher, now: datetime) -> int:
    """Publish the commands due in the outbox; rows are claimed so two engines never both send."""
    sent = 0
    with conn.transaction():
        for due in service.claim_due_commands(conn, now=now):
            if due.gateway_id is None:
                log.warning("command %s: %s has no gateway", due.command_id, due.device_id)
                continue
            if due.action == CommandAction.LOCKOUT and due.car_safe is not True:
                # rule M6: sent only when the platform itself sees an idle, empty car in a door
                # zone (the controller then opens the doors and applies it); retried later, or
                # at once when the car's state changes
                service.defer_publication(
                    conn, command_id=due.command_id, now=now, minutes=due.repeat_minutes
                )
                continue
            command = Command(
                gateway=due.gateway_id,
                device=due.device_id,
                command_id=due.command_id,
                action=CommandAction(due.action),
                ts=to_ms(now),
                reason=due.reason,
            )
            topic, payload = encode(command)
            if not publisher.publish(topic, payload, qos=1):
                log.warning("command %s not acknowledged by the broker; will retry", command)
                break
            service.mark_published(
                conn, command_id=due.command_id, at=now, repeat_minutes=due.repeat_minutes
            )
            sent += 1
    return sent


def sweep_devices(conn: psycopg.Connection, *, devices: set[str], now: datetime) -> SweepResult:
    """Judge late evidence of these elevators again, sweep them, and bring their deferred
    lockouts forward (their car may have become safe to lock out)."""
    for device_id in sorted(devices):
        flows.rejudge_device(conn, device_id=device_id, now=now)
    result = flows.sweep(conn, now=now, device_ids=sorted(devices))
    service.expedite_lockouts(conn, device_ids=sorted(devices), now=now)
    return result


async def sweep_shards(
    *, resources: Resources, now: datetime, interval: timedelta, findings: bool = True
) -> SweepResult:
    """One sweep of the fleet, shard by shard, each in its own transaction (an engine that
    dies mid-sweep leaves no half-swept shard); a shard another engine holds, or swept less
    than half an interval ago, is left to it. Then, with ``findings``, the findings checks,
    by one engine."""
    shards, _ = await resources.on_db(service.sweep_shards)
    full_every = timedelta(seconds=resources.settings.compliance.full_sweep_interval_s)
    total = SweepResult(examined=0)
    start = random.randrange(shards)  # engines starting together take different shards first
    for step in range(shards):
        shard = (start + step) % shards
        part = await resources.on_db(
            flows.sweep_shard,
            now=now,
            shard=shard,
            shards=shards,
            full_every=full_every,
            not_within=interval / 2,
        )
        if not part.skipped:
            total.add(part)
    if findings:
        total.add(await resources.on_db(flows.check_findings_once, now=now))
    return total


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


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """Sweep, react to events, publish commands and purge expired records until ``stop``."""
    await asyncio.gather(
        _sweep(resources=resources, stop=stop), _purge(resources=resources, stop=stop)
    )


async def _purge(*, resources: Resources, stop: asyncio.Event) -> None:
    """Rule A3: once a day, the records kept past their retention go (their log stays)."""
    retention = resources.settings.retention

    async def purge() -> None:
        gone = await resources.on_db(
            service.purge_records, now=resources.clock.now(), years=retention.maintenance_years
        )
        if gone:
            log.info("retention: %d maintenance record(s) purged", gone)

    await every(clock=resources.clock, seconds=retention.purge_interval_s, action=purge, stop=stop)


async def _sweep(*, resources: Resources, stop: asyncio.Event) -> None:
    """Sweep, react to events and publish commands until ``stop`` is set."""
    clock = resources.clock
    interval = timedelta(seconds=resources.settings.compliance.sweep_interval_s)
    dirty: set[str] = set()
    pending: set[str] = set()  # lifts whose lockout waits for a safe car (rule M6)
    wake = asyncio.Event()
    channels = [notify.EVENTS, notify.COMMANDS, notify.MAINTENANCE]

    async with resources.listener(channels) as listener:
        listening = asyncio.create_task(_listen(listener, dirty=dirty, wake=wake, pending=pending))
        try:
            next_full = next_findings = clock.now()
            findings_every = timedelta(seconds=resources.settings.compliance.findings_interval_s)
            while not stop.is_set():
                wake.clear()
                now = clock.now()
                if now >= next_full:
                    dirty.clear()
                    findings = now >= next_findings
                    result = await sweep_shards(
                        resources=resources, now=now, interval=interval, findings=findings
                    )
                    next_full = now + interval
                    if findings:
                        next_findings = now + findings_every
                    _report(result)
                elif dirty:
                    devices = set(dirty)
                    dirty.clear()
                    result = await resources.on_db(sweep_devices, devices=devices, now=now)
                    if result.skipped:
                        dirty.update(devices)  # another engine was sweeping: try again
                    _report(result)
                await resources.on_db(publish_due, publisher=resources.mqtt, now=now)
                pending.clear()
                pending.update(await resources.on_db(service.lockouts_pending))
                due = await resources.on_db(service.next_publication)
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
