"""Timers of ingest: storage upkeep (partitions ahead, retention, hourly rollups, policies)."""

from __future__ import annotations

import logging
import threading

import psycopg

from ingest import flows, service
from vigil.clock import Clock
from vigil.config import IngestSettings

log = logging.getLogger(__name__)

UPKEEP_LOCK = 0x5649_0101  # one storage upkeep at a time across workers


def upkeep_once(
    *, database_url: str, settings: IngestSettings, clock: Clock, apply_policies: bool
) -> flows.Upkeep | None:
    """One upkeep run, unless another worker holds the lock (then None)."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        if not service.try_lock(conn, key=UPKEEP_LOCK):
            return None
        try:
            if apply_policies:
                service.apply_timescale_policies(
                    conn,
                    compress_after_days=settings.compress_after_days,
                    retention_days=settings.retention_days,
                )
                conn.commit()
            return flows.maintain_storage(conn, today=clock.now().date(), settings=settings)
        finally:
            conn.rollback()
            service.unlock(conn, key=UPKEEP_LOCK)


def run_upkeep(
    *, database_url: str, settings: IngestSettings, clock: Clock, stop: threading.Event
) -> None:
    """Run the upkeep now and every ``maintenance_interval_s`` until ``stop`` is set."""
    policies_applied = False
    stalled_before: set[str] = set()
    while not stop.is_set():
        try:
            upkeep = upkeep_once(
                database_url=database_url,
                settings=settings,
                clock=clock,
                apply_policies=not policies_applied,
            )
            if upkeep is not None:
                policies_applied = True
                if upkeep.partitions_dropped or upkeep.partitions_created:
                    log.info("storage upkeep: %s", upkeep)
                stalled = {job.name for job in upkeep.jobs_stalled}
                # one line when jobs start to stall and one when they recover, not every run
                if stalled - stalled_before:
                    log.warning(
                        "TimescaleDB's scheduler does not get these jobs done; ingest runs them "
                        "itself every %.0f s: %s",
                        settings.maintenance_interval_s,
                        "; ".join(f"{j.name} ({j.problem})" for j in upkeep.jobs_stalled),
                    )
                elif stalled_before - stalled:
                    log.info("TimescaleDB jobs run by the scheduler again: %s", stalled_before)
                stalled_before = stalled
        except psycopg.Error as exc:
            log.warning("storage upkeep failed, retrying later: %s", exc)
        # real seconds between runs: pacing, not a domain deadline
        stop.wait(settings.maintenance_interval_s)
