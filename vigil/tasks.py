"""The one supervise loop: a long-lived task that ends with an error is logged and started
again after a delay on the clock; a failure is data, never a dead task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from vigil.clock import Clock, sleep_or_event

log = logging.getLogger(__name__)


async def supervise(
    name: str,
    start: Callable[[], Awaitable[None]],
    *,
    clock: Clock,
    restart_delay_s: float,
    stop: asyncio.Event | None = None,
    report: Callable[[str | None], None] | None = None,
) -> None:
    """Run ``start()``; whenever it ends with an error, log it and run it again
    ``restart_delay_s`` later. With ``stop``: return once ``start()`` returns or ``stop`` is
    set; without: run until cancelled. ``report`` hears the failure until the restart (a
    process's readiness: ``vigil.ops.Health.report``)."""
    while stop is None or not stop.is_set():
        if report is not None:
            report(None)
        try:
            await start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s ended with an error; restarting it in %ss", name, restart_delay_s)
            if report is not None:
                report(f"ended with {type(exc).__name__}: {exc}; restarting in {restart_delay_s}s")
            await sleep_or_event(
                clock, seconds=restart_delay_s, events=(stop,) if stop is not None else ()
            )
            continue
        if stop is not None:
            return


async def every(
    *,
    clock: Clock,
    seconds: float,
    action: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
) -> None:
    """Run ``action()`` now and then every ``seconds`` of clock time until ``stop`` is set."""
    while not stop.is_set():
        await action()
        await sleep_or_event(clock, seconds=seconds, events=(stop,))


def cancel_requested() -> bool:
    """Whether someone asked the current task to stop (outside a task: True).

    A library can swallow a cancellation: Python 3.11's ``asyncio.wait_for`` returns the result
    when its future completes in the same moment the task is cancelled (gh-86296). The request
    is still counted on the task, so a loop that checks it ends anyway."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def end_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop and carried on."""
    if cancel_requested():
        raise asyncio.CancelledError
