"""Alert timers: deliver queued messages, fire due escalation levels, flag roster gaps.

Every loop sleeps on the injected clock until its next due time, and wakes early when a
``vigil_alerts`` notice says something changed; none polls the database in a loop. State lives
in the database (leases, ``escalation_firings``), so several processes may run this at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from alerts import service
from alerts.channels import Channels
from alerts.flows import retry_at
from alerts.models import Audience, Delivery, RetryPolicy, Severity
from vigil import notify
from vigil.clock import Clock, sleep_or_event
from vigil.config import AlertsSettings
from vigil.metrics import NOTIFICATIONS
from vigil.resources import Resources

log = logging.getLogger(__name__)

ROSTER_GAP = "roster_gap"


def retry_policy(settings: AlertsSettings) -> RetryPolicy:
    """Retry policy from settings."""
    return RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        base_s=settings.retry_base_s,
        cap_s=settings.retry_cap_s,
    )


class DeliveryWorker:
    """Sends due deliveries concurrently; records every attempt; retries with backoff."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        channels: Channels,
        clock: Clock,
        settings: AlertsSettings,
    ) -> None:
        self._pool = pool
        self._channels = channels
        self._clock = clock
        self._retry = retry_policy(settings)
        self._lease = timedelta(seconds=settings.webhook_timeout_s * 3 + 30)
        self.wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        # a lease can run out on a clock that jumps (tests, accelerated demo): never send twice
        self._in_flight: set[int] = set()

    async def run(self, *, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; in-flight sends finish first."""
        try:
            while not stop.is_set():
                self.wake.clear()
                async with self._pool.connection() as conn:
                    claimed = await service.aclaim_due_deliveries(
                        conn,
                        now=self._clock.now(),
                        lease=self._lease,
                        sending=sorted(self._in_flight),
                    )
                    for delivery in claimed:
                        self._in_flight.add(delivery.id)
                        task = asyncio.create_task(self._send(delivery))
                        self._sending.add(task)
                        task.add_done_callback(self._sending.discard)
                    next_due = await service.anext_delivery_due(conn)
                await sleep_or_event(self._clock, until=next_due, events=(self.wake, stop))
        finally:
            if self._sending:
                await asyncio.gather(*self._sending, return_exceptions=True)

    async def _send(self, delivery: Delivery) -> None:
        try:
            await self._send_and_record(delivery)
        except Exception:
            # the lease runs out and the delivery is tried again
            log.exception("delivery %s could not be recorded", delivery.id)
        finally:
            self._in_flight.discard(delivery.id)

    async def _send_and_record(self, delivery: Delivery) -> None:
        result = await self._channels.send(delivery, timestamp_ms=self._clock.now_ms())
        now = self._clock.now()
        again = None
        if not result.ok and result.retryable:
            again = retry_at(policy=self._retry, attempts=delivery.attempts + 1, now=now)
        async with self._pool.connection() as conn:
            status = await service.arecord_attempt(
                conn,
                delivery_id=delivery.id,
                at=now,
                ok=result.ok,
                detail=result.detail,
                retry_at=again,
            )
        NOTIFICATIONS.labels(channel=str(delivery.channel), outcome=str(status)).inc()
        if not result.ok:
            log.warning(
                "delivery %s over %s to %s: %s (%s)",
                delivery.id,
                delivery.channel,
                delivery.address,
                result.detail,
                status,
            )
        # a retry time may now be the earliest due time
        self.wake.set()


async def escalate_forever(
    *, pool: AsyncConnectionPool, clock: Clock, wake: asyncio.Event, stop: asyncio.Event
) -> None:
    """Fire escalation levels as they fall due (rule S2)."""
    while not stop.is_set():
        wake.clear()
        async with pool.connection() as conn:
            async with conn.transaction():
                fired = await service.afire_due_escalations(conn, now=clock.now())
            next_due = await service.anext_escalation(conn)
        for firing in fired:
            log.info("alarm %s: escalation level %s fired", firing.alarm_id, firing.level)
        await sleep_or_event(clock, until=next_due, events=(wake, stop))


def check_rosters(conn: psycopg.Connection, *, now: datetime, horizon: timedelta) -> int:
    """Rule R3: every contracted elevator has a qualified technician of its firm on call at
    every hour of the horizon. Raise a roster-gap alarm on each firm with an uncovered elevator
    (the elevators and periods in its details); clear it when all are covered. Returns how
    many firms have gaps."""
    by_firm: dict[int, list[dict[str, Any]]] = {}
    for (firm_id, timezone), devices in service.contracted_elevators_by_zone(conn).items():
        gaps = service.roster_gaps(
            conn, firm_id=firm_id, start=now, end=now + horizon, timezone=timezone
        )
        uncovered = by_firm.setdefault(firm_id, [])
        if gaps:
            uncovered.append(
                {
                    "timezone": timezone,
                    "elevators": len(devices),
                    "devices": devices[:50],
                    "gaps": [[g.start.isoformat(), g.end.isoformat()] for g in gaps],
                }
            )
    with_gaps = 0
    for firm_id, uncovered in by_firm.items():
        if uncovered:
            with_gaps += 1
            periods = sorted({tuple(g) for group in uncovered for g in group["gaps"]})
            elevators = sum(group["elevators"] for group in uncovered)
            service.raise_alarm(
                conn,
                source_type="firm",
                source_id=firm_id,
                type=ROSTER_GAP,
                severity=Severity.MAJOR,
                message=f"nobody qualified on call for {elevators} elevator(s) in "
                f"{len(periods)} period(s) of the next {horizon}",
                audience=[Audience.FIRM, Audience.FIRM_MANAGER],
                at=now,
                details={"gaps": [list(p) for p in periods], "uncovered": uncovered},
            )
        else:
            service.clear_alarms_of(
                conn,
                source_type="firm",
                source_id=firm_id,
                type=ROSTER_GAP,
                by="roster-check",
                at=now,
                reason="roster covers every contracted elevator over the horizon",
            )
    return with_gaps


async def check_rosters_forever(
    *, db: ConnectionPool, clock: Clock, settings: AlertsSettings, stop: asyncio.Event
) -> None:
    """Check rosters at start and then every ``roster_check_interval_s``."""
    horizon = timedelta(hours=settings.roster_horizon_h)
    never = asyncio.Event()
    while not stop.is_set():
        await asyncio.to_thread(_check_rosters_once, db, clock.now(), horizon)
        until = clock.now() + timedelta(seconds=settings.roster_check_interval_s)
        await sleep_or_event(clock, until=until, events=(never, stop))


def _check_rosters_once(db: ConnectionPool, now: datetime, horizon: timedelta) -> None:
    with db.connection() as conn, conn.transaction():
        check_rosters(conn, now=now, horizon=horizon)


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """Run the delivery worker, the escalation timer and the roster check until ``stop``."""
    clock, alerts, pool = resources.clock, resources.settings.alerts, resources.adb
    escalation_wake = asyncio.Event()
    async with (
        httpx.AsyncClient() as http,
        resources.listener([notify.ALERTS]) as listener,
    ):
        channels = Channels(settings=alerts, mqtt=resources.mqtt, pool=pool, http=http)
        worker = DeliveryWorker(pool=pool, channels=channels, clock=clock, settings=alerts)

        async def fan_out() -> None:
            async for notice in listener:
                kind = notice.get("kind") if isinstance(notice, dict) else None
                if kind == "deliveries":
                    worker.wake.set()
                elif kind == "alarm":
                    escalation_wake.set()

        listening = asyncio.create_task(fan_out())
        working = asyncio.ensure_future(
            asyncio.gather(
                worker.run(stop=stop),
                escalate_forever(pool=pool, clock=clock, wake=escalation_wake, stop=stop),
                check_rosters_forever(db=resources.db, clock=clock, settings=alerts, stop=stop),
            )
        )
        try:
            await asyncio.wait({listening, working}, return_when=asyncio.FIRST_COMPLETED)
            if listening.done():
                # without notices nothing would wake up: fail so the engine restarts us
                raise listening.exception() or RuntimeError("alerts listener ended")
            await working
        finally:
            for task in (listening, working):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
