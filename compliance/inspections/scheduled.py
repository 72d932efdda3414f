"""Inspection runner (rule L4): at start and at each local hour or device due time, records the
rounds not done in time as findings and raises the overdue alarms."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import psycopg

from compliance.inspections import flows
from compliance.inspections.models import MissedRound
from vigil.clock import sleep_or_event
from vigil.resources import Resources

log = logging.getLogger(__name__)


def sweep(conn: psycopg.Connection, *, now: datetime) -> tuple[list[MissedRound], datetime]:
    """One look: the new findings, and when to look again (the devices' last rounds read once:
    a finding does not move a due time)."""
    rows = flows.device_rows(conn)
    found = flows.check_rounds(conn, now=now, rows=rows)
    return found, flows.next_check([flows.device_due(row, now=now) for row in rows], now=now)


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """Find missed rounds until ``stop`` is set."""
    clock = resources.clock
    while not stop.is_set():
        found, next_at = await resources.on_db(sweep, now=clock.now())
        for finding in found:
            log.info(
                "rule L4: %s of %s missed (%d of %d by %s)",
                finding.kind,
                finding.device_id or f"site {finding.site_id}",
                finding.done,
                finding.required,
                finding.due_by.isoformat(),
            )
        await sleep_or_event(clock, until=next_at, events=(stop,))
