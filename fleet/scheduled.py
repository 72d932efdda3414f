"""The registry's runner (in ``vigil compliance``): contracts begin and end with the days, so the
firm in force of every device is set again at start and every sweep interval."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from psycopg_pool import ConnectionPool

from fleet import service
from vigil.resources import Resources
from vigil.tasks import every

log = logging.getLogger(__name__)


def sync_firms(db: ConnectionPool, *, now: datetime) -> int:
    """Set every device's firm to the contract in force at ``now``; how many changed."""
    with db.connection() as conn, conn.transaction():
        return service.sync_firm_in_force(conn, now=now)


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """Keep the firm in force current until ``stop`` is set."""
    clock = resources.clock

    async def sync() -> None:
        changed = await asyncio.to_thread(sync_firms, resources.db, now=clock.now())
        if changed:
            log.info("contracts began or ended: %d device(s) changed firm", changed)

    await every(
        clock=clock,
        seconds=resources.settings.compliance.sweep_interval_s,
        action=sync,
        stop=stop,
    )
