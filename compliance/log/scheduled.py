"""Timer of the compliance log: a signed tree head every ``checkpoint_interval_s`` (rule A1)."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from compliance.log import flows
from vigil.clock import Clock
from vigil.config import Settings
from vigil.resources import Resources
from vigil.tasks import every

log = logging.getLogger(__name__)


def checkpoint_once(*, db: ConnectionPool, settings: Settings, clock: Clock) -> bool:
    """Sign the current head unless the latest checkpoint covers it; True when one was made."""
    key = flows.load_or_create_key(flows.signing_key_path(settings))
    with db.connection() as conn, conn.transaction():
        made = flows.create_checkpoint(conn, key=key, at=clock.now())
    if made is not None:
        log.info("checkpoint %s: %s entries, head %s", made.id, made.entry_count, made.head_hash)
    return made is not None


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """Sign checkpoints on a schedule until ``stop`` is set."""
    clock, settings = resources.clock, resources.settings

    async def checkpoint() -> None:
        try:
            await asyncio.to_thread(
                checkpoint_once, db=resources.db, settings=settings, clock=clock
            )
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("checkpoint skipped, database unavailable: %s", exc)
        except flows.LogTampered as exc:
            # nothing unproven is signed; the log's verify names what broke
            log.error("checkpoint refused: %s", exc)

    await every(
        clock=clock, seconds=settings.compliance.checkpoint_interval_s, action=checkpoint, stop=stop
    )
