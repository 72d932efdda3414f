"""The kernel's task helpers: a cancellation a library swallowed still ends a loop that checks
``end_if_cancelled`` (the gateway's broker link hung on shutdown without it)."""

from __future__ import annotations

import asyncio

import pytest

from vigil.tasks import cancel_requested, end_if_cancelled


async def _report_forever(rounds: list[int], *, check: bool) -> None:
    """A reporting loop as the gateway's health reporter is: publish, then sleep long."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    while True:
        published = loop.create_future()
        # the broker acknowledges in the very moment the session ends and cancels us: Python
        # 3.11's wait_for then returns the result and drops the cancellation (gh-86296)
        loop.call_soon(lambda done=published: (done.set_result(None), task.cancel()))
        await asyncio.wait_for(published, timeout=10)
        rounds.append(1)
        if check:
            end_if_cancelled()
        await asyncio.sleep(3600)  # until the next report


async def test_a_loop_that_checks_ends_although_the_library_swallowed_the_cancellation():
    rounds: list[int] = []
    task = asyncio.create_task(_report_forever(rounds, check=True))
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done == {task} and task.cancelled()


async def test_without_the_check_the_swallowed_cancellation_leaves_the_loop_asleep():
    # what the check guards against; on Pythons whose wait_for keeps the cancellation the loop
    # ends by itself, and the guard is merely harmless
    rounds: list[int] = []
    task = asyncio.create_task(_report_forever(rounds, check=False))
    done, _ = await asyncio.wait({task}, timeout=0.5)
    if task.done():
        pytest.skip("this Python's wait_for does not swallow a cancellation")
    assert rounds == [1] and not done
    task.cancel()  # a second request does reach it
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()


async def test_a_task_nobody_asked_to_stop_carries_on():
    assert not cancel_requested()
    end_if_cancelled()  # does not raise
