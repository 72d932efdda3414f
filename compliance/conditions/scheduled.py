"""Condition runner: checks on every state change that ingest announces, and on a schedule."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from compliance.conditions import flows
from compliance.conditions.models import Thresholds
from vigil import notify
from vigil.clock import Clock, sleep_or_event
from vigil.config import Settings

log = logging.getLogger(__name__)


async def run(
    *,
    database_url: str,
    mqtt_url: str,
    clock: Clock,
    settings: Settings,
    stop: asyncio.Event,
) -> None:
    """Check every device at start and every sweep interval; changed devices as they change."""
    thresholds = Thresholds()
    # One connection serves every check; the lock keeps the sweep and the watcher apart.
    conn = await asyncio.to_thread(psycopg.connect, database_url, autocommit=True)
    busy = asyncio.Lock()

    def check(devices: list[str] | None) -> None:
        for finding in flows.check(conn, now=clock.now(), thresholds=thresholds, devices=devices):
            state = "raised" if finding.holds else "cleared"
            log.info("%s: %s %s", finding.device_id, finding.condition.type, state)

    async with notify.Listener(database_url, [notify.STATE]) as listener:

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
            await asyncio.to_thread(conn.close)
