"""The one source of time: every deadline in Vigil is computed from a Clock, never the wall clock.

Three kinds:

* ``RealClock``: wall time.
* ``FakeClock``: for tests; time moves only when ``advance()`` is called, and sleepers whose
  deadline has passed wake up in deadline order.
* ``AcceleratedClock``: for the demo; simulated time runs ``factor`` times faster than real time
  (``factor=1440`` is one simulated day per real minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import re
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol, runtime_checkable

from pydantic import BeforeValidator


@runtime_checkable
class Clock(Protocol):
    """What every time-dependent component receives."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def now_ms(self) -> int:
        """Current time in milliseconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for ``seconds`` of this clock's time."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Wait until this clock reads ``when`` or later."""
        ...


def to_ms(when: datetime) -> int:
    """Milliseconds since the epoch for an aware datetime."""
    return int(when.timestamp() * 1000)


def years_before(when: datetime, years: int) -> datetime:
    """The same instant ``years`` calendar years earlier (29 February becomes the 28th)."""
    try:
        return when.replace(year=when.year - years)
    except ValueError:
        return when.replace(year=when.year - years, day=28)


def from_ms(ms: int) -> datetime:
    """Aware UTC datetime for milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class _ClockBase:
    def now(self) -> datetime:  # pragma: no cover - overridden
        raise NotImplementedError

    def now_ms(self) -> int:
        """Current time in milliseconds since the Unix epoch."""
        return to_ms(self.now())

    async def sleep_until(self, when: datetime) -> None:
        """Wait until this clock reads ``when`` or later."""
        remaining = (when - self.now()).total_seconds()
        if remaining > 0:
            await self.sleep(remaining)


class RealClock(_ClockBase):
    """Wall-clock time."""

    def now(self) -> datetime:
        """Current wall time in UTC."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep for real seconds."""
        await asyncio.sleep(max(0.0, seconds))


class AcceleratedClock(_ClockBase):
    """Simulated time that runs ``factor`` times faster than real time, from ``start``."""

    def __init__(self, *, factor: float, start: datetime | None = None) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.factor = factor
        self.start = start or datetime.now(UTC)
        self._real_start = time.monotonic()

    def now(self) -> datetime:
        """Simulated now."""
        elapsed = (time.monotonic() - self._real_start) * self.factor
        return self.start + timedelta(seconds=elapsed)

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of simulated time."""
        await asyncio.sleep(max(0.0, seconds) / self.factor)


class FakeClock(_ClockBase):
    """A clock for tests: time stands still until ``advance()``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        """The fake now."""
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (never backwards), waking due sleepers."""
        if when < self._now:
            raise ValueError("a FakeClock never goes backwards")
        self._now = when
        self._wake_due()

    def advance(self, seconds: float | timedelta = 0.0) -> datetime:
        """Move time forward, waking every sleeper now due; returns the new now."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        self.set(self._now + delta)
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self._now + timedelta(seconds=seconds)
        heapq.heappush(self._sleepers, (deadline, next(self._counter), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock (lets tests await 'everyone is asleep')."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def wait_for_sleepers(self, count: int = 1, *, timeout: float = 10.0) -> None:
        """Wait until ``count`` tasks sleep on this clock, so an ``advance()`` reaches them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sleepers < count:
            if loop.time() > deadline:
                raise TimeoutError(f"{self.sleepers} of {count} sleepers after {timeout}s")
            await asyncio.sleep(0.001)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.get_loop().call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def make_clock(*, kind: str = "real", factor: float = 1.0, start: datetime | None = None) -> Clock:
    """Build a clock from settings: ``real``, ``accelerated`` or ``fake``."""
    if kind == "real":
        return RealClock()
    if kind == "accelerated":
        return AcceleratedClock(factor=factor, start=start)
    if kind == "fake":
        return FakeClock(start)
    raise ValueError(f"unknown clock kind {kind!r}")


async def sleep_or_event(
    clock: Clock,
    *,
    events: Sequence[asyncio.Event],
    seconds: float | None = None,
    until: datetime | None = None,
) -> None:
    """Wait on ``clock`` for ``seconds`` (or until ``until``), or less if one of ``events`` is
    set first: the one wait-or-stop of every runner (no deadline: only the events end it)."""
    waiters: list[Awaitable[object]] = [event.wait() for event in events]
    if seconds is not None:
        waiters.append(clock.sleep(seconds))
    if until is not None:
        waiters.append(clock.sleep_until(until))
    tasks = [asyncio.ensure_future(w) for w in waiters]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# An instant as people and programs write it: ISO 8601 with a time zone. A bare number (pydantic
# would take ``0.5`` as seconds after 1970) or a local time without its zone is not an instant.
_ISO_INSTANT = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"
)
INSTANT_EXAMPLE = "2026-11-30T08:00:00+08:00"


def _instant(value: object) -> object:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"needs a time zone offset, e.g. {INSTANT_EXAMPLE}")
        return value
    if isinstance(value, str) and _ISO_INSTANT.match(value.strip()):
        return value.strip()
    raise ValueError(f"an ISO 8601 date-time with a time zone, e.g. {INSTANT_EXAMPLE}")


Instant = Annotated[datetime, BeforeValidator(_instant)]
