"""Condition runner: checks on every state change that ingest announces, and on a schedule
(conditions of rules L1, L2, L5, E1, E2; counters of rule E4; each hour's consumption once,
rule E3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from compliance.conditions import flows
from vigil import notify
from vigil.clock import sleep_or_event
from vigil.resources import Resources

log = logging.getLogger(__name__)


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """Check every device at start and every sweep interval; changed devices as they change."""
    clock, settings = resources.clock, resources.settings
    busy = asyncio.Lock()  # keeps the sweep and the watcher apart

    judged_hours: list[datetime] = []  # rule E3 judges each complete hour once

    def check(devices: list[str] | None) -> None:
        with resources.db.connection() as conn:
            now = clock.now()
            findings = flows.check(conn, now=now, devices=devices)
            drops = flows.check_counters(conn, now=now, devices=devices)
            hour = now.replace(minute=0, second=0, microsecond=0)
            if devices is None and hour not in judged_hours:
                findings += flows.check_consumption(conn, now=now)
                judged_hours[:] = [hour]
        for finding in findings:
            state = "raised" if finding.holds else "cleared"
            log.info("%s: %s %s", finding.device_id, finding.condition.type, state)
        for drop in drops:
            log.warning("%s: %s went backwards (rule E4)", drop["device_id"], drop["metric"])

    async with resources.listener([notify.STATE]) as listener:

        async def on_state() -> None:
            async for notice in listener:
                async with busy:
                    await asyncio.to_thread(check, flows.devices_of([notice]))

        watcher = asyncio.create_task(on_state())
        try:
            while not stop.is_set():
                async with busy:
                    await asyncio.to_thread(check, None)
                await sleep_or_event(
                    clock, seconds=settings.compliance.sweep_interval_s, events=(stop,)
                )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
