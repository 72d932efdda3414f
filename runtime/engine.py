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

from alerts import service as alerts_service
from compliance.rescue import service as rescue_service
from vigil import ops
from vigil.db.timescale import job_failure_counts
from vigil.metrics import DatabaseCollector
from vigil.resources import Resources
from vigil.tasks import supervise
from workorders import service as workorders_service

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
    name: str,
    runner: Runner,
    *,
    resources: Resources,
    stop: asyncio.Event,
    health: ops.Health | None = None,
) -> None:
    """Run one runner until stop, restarting it if it fails."""
    await supervise(
        f"runner {name}",
        lambda: runner(resources=resources, stop=stop),
        clock=resources.clock,
        restart_delay_s=RESTART_DELAY_S,
        stop=stop,
        report=None if health is None else lambda problem: health.report(name, problem),
    )


async def run(
    *,
    resources: Resources,
    stop: asyncio.Event,
    modules: Sequence[str] = RUNNER_MODULES,
    health: ops.Health | None = None,
) -> None:
    """Run every runner until ``stop`` is set (a failed runner is reported to ``health``)."""
    found = runners(modules)
    log.info("compliance engine: %s", ", ".join(name for name, _ in found))
    await asyncio.gather(
        *(
            _supervise(name, runner, resources=resources, stop=stop, health=health)
            for name, runner in found
        )
    )


def watch(
    *, resources: Resources, health: ops.Health, loop_stall_s: float = 5.0
) -> DatabaseCollector:
    """Register the engine's readiness checks (event loop answering within ``loop_stall_s``,
    database, broker) and return the collector of the figures that live in the database (for
    ``/metrics``)."""
    health.add_check(
        "event loop", ops.loop_check(asyncio.get_running_loop(), within_s=loop_stall_s)
    )
    health.add_check("database", ops.database_check(resources.db.connection))
    health.add_check(
        "broker", lambda: None if resources.mqtt.connected else "not connected to the broker"
    )
    return database_figures(resources.db.connection)


def database_figures(connect: Callable[[], object]) -> DatabaseCollector:
    """The figures that live in the database, read at each scrape on ``connect()``."""
    figures = DatabaseCollector(connect)
    figures.add(
        "vigil_open_incidents",
        "Rescue incidents not closed, by status",
        ("status",),
        rescue_service.open_incident_counts,
    )
    figures.add(
        "vigil_open_alarms",
        "Alarms not cleared, by severity",
        ("severity",),
        alerts_service.open_alarm_counts,
    )
    figures.add(
        "vigil_sla_breaches",
        "Deadlines missed (rescue arrival, work orders, complaints), by kind",
        ("kind",),
        lambda conn: [
            *rescue_service.breach_counts(conn),
            *workorders_service.breach_counts(conn),
        ],
        counter=True,
    )
    figures.add(
        "vigil_timescaledb_job_failures",
        "Failed runs of TimescaleDB's background jobs (compression, retention), by job",
        ("job", "hypertable"),
        job_failure_counts,
        counter=True,
    )
    return figures
