"""What one process builds once and hands down to its runners: the database pools, the one MQTT
client it publishes with, the clock and the settings.

The composition root (``runtime``) opens them with ``open_resources`` and passes them on; a runner
is ``async def run(*, resources, stop)`` and never sees a URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from vigil import notify
from vigil.broker import Publisher
from vigil.clock import Clock
from vigil.config import Settings
from vigil.db.pool import open_async_pool, open_pool, run_in_thread

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Resources:
    """A process's shared resources.

    ``db`` serves the synchronous flows (run in worker threads; tuple rows unless a cursor asks
    for dicts), ``adb`` the asynchronous ones (dict rows). Both hand out autocommit connections:
    a flow that needs several statements to commit together opens ``conn.transaction()``.
    """

    clock: Clock
    settings: Settings
    db: ConnectionPool
    adb: AsyncConnectionPool
    mqtt: Publisher

    async def on_db(self, action: Callable[..., T], /, **kwargs: Any) -> T:
        """Run a synchronous flow ``action(conn, **kwargs)`` in a worker thread, on a pooled
        connection."""
        return await run_in_thread(self.db, action, **kwargs)

    def listener(self, channels: Sequence[str]) -> notify.Listener:
        """A LISTEN session on its own connection to the same database (``async with``)."""
        return notify.Listener(self.adb.conninfo, channels)


@contextlib.asynccontextmanager
async def open_resources(
    *,
    database_url: str,
    mqtt_url: str,
    clock: Clock,
    settings: Settings,
    pool_size: int = 8,
) -> AsyncIterator[Resources]:
    """Open the pools and start the MQTT client; close them all on exit."""
    db = await asyncio.to_thread(
        open_pool,
        database_url,
        min_size=1,
        max_size=pool_size,
        autocommit=True,
        row_factory=tuple_row,
    )
    try:
        adb = await open_async_pool(database_url, min_size=1, max_size=pool_size, autocommit=True)
        try:
            mqtt = Publisher(mqtt_url)
            mqtt.start()
            try:
                yield Resources(clock=clock, settings=settings, db=db, adb=adb, mqtt=mqtt)
            finally:
                await asyncio.to_thread(mqtt.close)
        finally:
            await adb.close()
    finally:
        await asyncio.to_thread(db.close)
