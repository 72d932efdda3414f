"""Timer of the compliance log: a signed checkpoint every ``checkpoint_interval_s`` (rule A1)."""

from __future__ import annotations

import asyncio
import logging

import psycopg

from compliance.log import flows
from vigil.clock import Clock, sleep_or_event
from vigil.config import Settings

log = logging.getLogger(__name__)


def checkpoint_once(*, database_url: str, settings: Settings, clock: Clock) -> bool:
    """Sign the current head unless the latest checkpoint covers it; True when one was made."""
    key = flows.load_or_create_key(flows.signing_key_path(settings))
    with psycopg.connect(database_url) as conn:
        made = flows.create_checkpoint(conn, key=key, at=clock.now())
    if made is not None:
        log.info("checkpoint %s: %s entries, head %s", made.id, made.entry_count, made.head_hash)
    return made is not None


async def run(
    *,
    database_url: str,
    mqtt_url: str,
    clock: Clock,
    settings: Settings,
    stop: asyncio.Event,
) -> None:
    """Sign checkpoints on a schedule until ``stop`` is set."""
    interval = settings.compliance.checkpoint_interval_s
    while not stop.is_set():
        try:
            await asyncio.to_thread(
                checkpoint_once, database_url=database_url, settings=settings, clock=clock
            )
        except psycopg.OperationalError as exc:
            log.warning("checkpoint skipped, database unavailable: %s", exc)
        await sleep_or_event(clock, seconds=interval, events=(stop,))
