"""The work-order runner (in ``vigil compliance``): turns what the platform decided into work,
and keeps the deadlines of rules S1 and S2.

It reacts to alarms raised or raised again (``vigil_alerts``), to rescues released or closed, and
to maintenance verdicts (``vigil_maintenance``), and sleeps on the injected clock until the next
deadline or escalation falls due. At start it turns into work whatever it missed while it was
down: open alarms, recent rescues and recent verdicts (each opens at most one order, so a
second engine or a restart never opens two).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg

from alerts import service as alerts
from alerts.models import AlarmState
from compliance.maintenance import service as maintenance
from compliance.rescue import service as rescue
from vigil import notify
from vigil.clock import sleep_or_event
from vigil.resources import Resources
from vigil.tasks import every
from workorders import flows, service
from workorders.models import Source

log = logging.getLogger(__name__)

# what a restart looks back at for rescues and verdicts it may have missed
LOOKBACK = timedelta(days=7)


def sources_of_notice(conn: psycopg.Connection, notice: Any, *, now: datetime) -> list[Source]:
    """The work a notice calls for (read from the rows it names); a verdict that proves a visit
    after all cancels the visit's corrective work."""
    if not isinstance(notice, dict):
        return []
    kind = notice.get("kind")
    if kind == "alarm" and flows.watches(notice.get("type")):
        if notice.get("change") not in ("raised", "retriggered"):
            return []
        alarm = alerts.get_alarm(conn, alarm_id=int(notice["id"]))
        found = flows.source_of_alarm(alarm)
        return [found] if found else []
    if kind == "incident" and notice.get("change") in ("released", "closed"):
        incident = rescue.get_incident(conn, incident_id=int(notice["id"]))
        found = flows.source_of_rescue(incident)
        return [found] if found else []
    if "verdict_id" in notice:  # a maintenance verdict (rule M3)
        if notice.get("verdict") == "verified":
            flows.proven_after_all(
                conn, device_id=str(notice["device_id"]), record_id=int(notice["record"]), at=now
            )
            return []
        found = flows.source_of_verdict(
            verdict_id=int(notice["verdict_id"]),
            record_id=int(notice["record"]),
            device_id=str(notice["device_id"]),
            verdict=str(notice["verdict"]),
        )
        return [found] if found else []
    return []


def missed_sources(conn: psycopg.Connection, *, now: datetime) -> list[Source]:
    """What needs work and may have been missed while no runner listened."""
    found: list[Source] = []
    for alarm in alerts.list_alarms(conn, states=[AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED]):
        if flows.watches(alarm.type) and (source := flows.source_of_alarm(alarm)):
            found.append(source)
    for incident in rescue.ended_incidents(conn, since=now - LOOKBACK):
        if source := flows.source_of_rescue(incident):
            found.append(source)
    for verdict in maintenance.failed_verdicts(conn, since=now - LOOKBACK):
        if source := flows.source_of_verdict(**verdict):
            found.append(source)
    return found


def take(conn: psycopg.Connection, *, sources: list[Source], now: datetime) -> int:
    """Open or repeat the work of each source; how many orders were opened."""
    opened = 0
    for source in sources:
        result = flows.open_or_repeat(conn, source=source, at=now)
        if result.created:
            opened += 1
            log.info(
                "work order %s opened on %s: %s",
                result.work_order.id,
                source.device_id,
                source.title,
            )
    return opened


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """Open work as the platform decides it, keep deadlines, and purge what outlived its
    retention, until ``stop`` is set."""
    await asyncio.gather(
        _work(resources=resources, stop=stop), _purge(resources=resources, stop=stop)
    )


async def _purge(*, resources: Resources, stop: asyncio.Event) -> None:
    """Rule A3: once a day, service records kept past their retention go (their log stays)."""
    retention = resources.settings.retention

    async def purge() -> None:
        complaints, orders = await resources.on_db(
            service.purge, now=resources.clock.now(), years=retention.service_years
        )
        if complaints or orders:
            log.info("retention: %d complaint(s), %d work order(s) purged", complaints, orders)

    await every(clock=resources.clock, seconds=retention.purge_interval_s, action=purge, stop=stop)


async def _work(*, resources: Resources, stop: asyncio.Event) -> None:
    """Open work as the platform decides it, and keep deadlines, until ``stop`` is set."""
    clock = resources.clock
    wake = asyncio.Event()
    inbox: list[Any] = []

    def handle(conn: psycopg.Connection, *, notices: list[Any], now: datetime) -> int:
        sources = [s for notice in notices for s in sources_of_notice(conn, notice, now=now)]
        return take(conn, sources=sources, now=now)

    async with resources.listener([notify.ALERTS, notify.MAINTENANCE]) as listener:

        async def collect() -> None:
            async for notice in listener:
                inbox.append(notice)
                wake.set()

        collecting = asyncio.create_task(collect())
        try:
            # LISTEN is in force: nothing announced from here on is missed
            missed = await resources.on_db(missed_sources, now=clock.now())
            await resources.on_db(take, sources=missed, now=clock.now())
            while not stop.is_set():
                wake.clear()
                if inbox:
                    notices = inbox[:]
                    inbox.clear()
                    await resources.on_db(handle, notices=notices, now=clock.now())
                await resources.on_db(flows.check_deadlines, now=clock.now())
                if collecting.done():
                    raise collecting.exception() or RuntimeError("work-order listener ended")
                due = await resources.on_db(service.next_due)
                await sleep_or_event(clock, until=due, events=(wake, stop))
        finally:
            collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collecting
