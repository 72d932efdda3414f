import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from vigil.clock import AcceleratedClock, FakeClock, from_ms, make_clock, to_ms


async def test_fake_clock_wakes_sleepers_in_deadline_order():
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper("late", 60)), asyncio.create_task(sleeper("early", 10))]
    while clock.sleepers < 2:
        await asyncio.sleep(0)
    clock.advance(30)
    await asyncio.wait_for(tasks[1], 1)
    assert woke == ["early"]
    assert not tasks[0].done()
    clock.advance(timedelta(seconds=30))
    await asyncio.wait_for(tasks[0], 1)
    assert woke == ["early", "late"]
    assert clock.now() == datetime(2026, 3, 1, 0, 1, tzinfo=UTC)


async def test_fake_clock_sleep_until():
    clock = FakeClock()
    target = clock.now() + timedelta(days=15)
    task = asyncio.create_task(clock.sleep_until(target))
    while clock.sleepers < 1:
        await asyncio.sleep(0)
    clock.advance(timedelta(days=14, hours=23))
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(timedelta(hours=1))
    await asyncio.wait_for(task, 1)


def test_fake_clock_never_goes_backwards():
    clock = FakeClock()
    with pytest.raises(ValueError):
        clock.set(clock.now() - timedelta(seconds=1))


async def test_accelerated_clock_runs_faster_than_real_time():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = AcceleratedClock(factor=3600, start=start)
    await clock.sleep(36)  # 36 simulated seconds = 10 real ms
    elapsed = clock.now() - start
    assert elapsed >= timedelta(seconds=36)
    assert elapsed < timedelta(hours=1)


def test_ms_round_trip_and_factory():
    when = datetime(2026, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    assert from_ms(to_ms(when)) == when
    assert isinstance(make_clock(kind="fake"), FakeClock)
    with pytest.raises(ValueError):
        make_clock(kind="sundial")


async def test_wait_for_sleepers_lets_a_test_advance_without_racing():
    clock = FakeClock()
    woke = asyncio.Event()

    async def ticker() -> None:
        await asyncio.sleep(0)  # the task reaches its sleep only after a few loop turns
        await clock.sleep(60)
        woke.set()

    task = asyncio.create_task(ticker())
    await clock.wait_for_sleepers(1)
    clock.advance(60)
    await asyncio.wait_for(woke.wait(), 1)
    await task
    with pytest.raises(TimeoutError):
        await clock.wait_for_sleepers(1, timeout=0.01)


def test_years_before_keeps_the_calendar_date_and_moves_29_february_to_the_28th():
    from datetime import UTC, datetime

    from vigil.clock import years_before

    assert years_before(datetime(2030, 6, 1, 8, tzinfo=UTC), 4) == datetime(
        2026, 6, 1, 8, tzinfo=UTC
    )
    assert years_before(datetime(2028, 2, 29, tzinfo=UTC), 3) == datetime(2025, 2, 28, tzinfo=UTC)
