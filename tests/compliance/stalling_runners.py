"""A runner module for the engine's tests: it fails every time it starts."""

from __future__ import annotations

import asyncio

from vigil.resources import Resources

FAILED = asyncio.Event()
RUNS = 0


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """Fail at once (and say so on ``FAILED``)."""
    global RUNS
    RUNS += 1
    FAILED.set()
    raise RuntimeError("this runner always fails")
