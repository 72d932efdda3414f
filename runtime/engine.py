"""The compliance engine: runs each runner (maintenance, compliance-log checkpoints, rescue).

A runner is ``async def run(*, resources, stop) -> None`` and returns when ``stop`` is set; the
process's pools, MQTT client, clock and settings come in ``resources`` (``vigil.resources``).
Every runner keeps its state in the database and takes advisory locks around its decisions, so
two engines may run at once.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from vigil.resources import Resources
from vigil.tasks import supervise

log = logging.getLogger(__name__)

Runner = Callable[..., Awaitable[None]]

RUNNER_MODULES = (
    "compliance.maintenance.scheduled",
    "compliance.log.scheduled",
    "compliance.rescue.scheduled",
    "compliance.conditions.scheduled",
    "compliance.inspections.scheduled",  # rule L4: rounds missed
    "fleet.scheduled",  # the firm in force as contracts begin and end
    "workorders.scheduled",  # faults, lapses and rescues become work; deadlines (S1, S2)
)

RESTART_DELAY_S = 5.0


def runners(modules: Sequence[str] = RUNNER_MODULES) -> list[tuple[str, Runner]]:
    """The ``run`` function of each runner module that exists."""
    found: list[tuple[str, Runner]] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        found.append((name, module.run))
    return found


async def _supervise(
    name: str, runner: Runner, *, resources: Resources, stop: asyncio.Event
) -> None:
    """Run one runner until stop, restarting it if it fails."""
    await supervise(
        f"runner {name}",
        lambda: runner(resources=resources, stop=stop),
        clock=resources.clock,
        restart_delay_s=RESTART_DELAY_S,
        stop=stop,
    )


async def run(
    *, resources: Resources, stop: asyncio.Event, modules: Sequence[str] = RUNNER_MODULES
) -> None:
    """Run every runner until ``stop`` is set."""
    found = runners(modules)
    log.info("compliance engine: %s", ", ".join(name for name, _ in found))
    await asyncio.gather(
        *(_supervise(name, runner, resources=resources, stop=stop) for name, runner in found)
    )
