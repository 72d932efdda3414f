"""Drive rescue detection the way ingest does: store events and state, then notify."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import psycopg

from compliance.rescue import scheduled
from compliance.rescue.flows import StraightLineEstimator
from vigil import notify
from vigil.clock import to_ms
from vigil.config import Settings
from vigil.resources import Resources

# A car parked at a landing, doors open, nobody inside.
IDLE = {
    "service_mode": 1,
    "car_status": 0,
    "door_zone": 1,
    "door_state": 2,
    "passengers": 0,
    "alarm_button": 0,
}


def push(conn: psycopg.Connection, device: str, at: datetime, **metrics: float) -> None:
    """Commit events and latest state for ``metrics`` and notify, as ingest does."""
    notices = []
    with conn.transaction():
        for metric, value in metrics.items():
            previous = conn.execute(
                "SELECT value FROM device_state WHERE device_id = %s AND metric = %s",
                (device, metric),
            ).fetchone()
            before = None if previous is None else _value(previous)
            conn.execute(
                "INSERT INTO device_state (device_id, metric, value, ts) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (device_id, metric) DO UPDATE SET value = EXCLUDED.value, "
                "ts = EXCLUDED.ts",
                (device, metric, value, at),
            )
            if before != value:
                row = conn.execute(
                    "INSERT INTO events (device_id, metric, ts, value, previous) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (device, metric, at, value, before),
                ).fetchone()
                notices.append(
                    notify.EventNotice(_value(row), device, metric, to_ms(at), value, before)
                )
        notify.send(conn, notify.EVENTS, [notify.event_payload(n) for n in notices])
        notify.send(conn, notify.STATE, notify.state_payloads([device]))


def _value(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


class Progress:
    """Notices the runner has finished handling, to await instead of sleeping."""

    def __init__(self) -> None:
        self.handled: list[Any] = []
        self._changed = asyncio.Condition()

    def __call__(self, notice: Any) -> None:
        self.handled.append(notice)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def ready(self, *, timeout: float = 10.0) -> None:
        """Wait until the runner listens and has re-armed."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: scheduled.READY in self.handled)

        await asyncio.wait_for(wait(), timeout)

    async def state_of(self, device: str, *, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` state notices naming ``device`` were handled."""

        def done() -> bool:
            seen = [
                n for n in self.handled if isinstance(n, notify.StateNotice) and device in n.devices
            ]
            return len(seen) >= count

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(done)

        await asyncio.wait_for(wait(), timeout)


@contextlib.asynccontextmanager
async def detector(
    resources_for: Callable[..., AbstractAsyncContextManager[Resources]],
    *,
    settings: Settings | None = None,
    estimator: Any = None,
) -> AsyncIterator[Progress]:
    """Run detection and dispatch (without the alerts workers) until the block ends, on the
    resources that ``resources_for`` (the fixture) opens."""
    progress = Progress()
    stop = asyncio.Event()
    async with resources_for(settings=settings or Settings()) as resources:
        task = asyncio.create_task(
            scheduled.detect_and_dispatch(
                resources=resources,
                stop=stop,
                estimator=estimator or StraightLineEstimator(),
                processed=progress,
            )
        )
        try:
            await progress.ready()
            yield progress
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


def incidents(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every incident row."""
    return conn.execute("SELECT * FROM rescue_incidents ORDER BY id").fetchall()


def reported(notice: Any) -> bool:
    """Matcher: an incident was reported."""
    return (
        isinstance(notice, dict)
        and notice.get("kind") == "incident"
        and (notice.get("change") == "reported")
    )


CallbackT = Callable[[Any], bool]
