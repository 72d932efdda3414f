"""One ingest worker: consumer → collector (decode, batch) → writer (commit, then ack).

Three threads: paho's network loop fills the inbox; the collector decodes and closes batches by
size or after ``flush_interval_ms``; the writer commits each batch and only then acknowledges
its messages. While the database is down the writer retries the same batch and acknowledges
nothing, so the broker stops sending once ``receive_maximum`` messages are unacknowledged.
A maintenance thread keeps partitions ahead, applies retention and rolls up hours.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

import psycopg

from ingest import flows, scheduled, service
from ingest.consumer import MqttConsumer
from ingest.jetstream import JetStreamConsumer, is_nats
from ingest.models import Batch, Delivery, IngestStats, Lane, Received, WriteResult
from ingest.registry import DeviceRegistry
from vigil import wire
from vigil.clock import Clock
from vigil.config import IngestSettings, Settings
from vigil.metrics import (
    BATCH_COMMIT,
    DATABASE_RECONNECTS,
    DEAD_LETTERS,
    MESSAGES_STORED,
    POINTS_DUPLICATE,
    POINTS_STORED,
)

log = logging.getLogger(__name__)

_STOP = None
URGENT_FLUSH_MS = 20


def session_client_id(client_id: str, index: int, lane: Lane) -> str:
    """The MQTT client id (a broker session) of a worker's lane."""
    return f"{client_id}-{index}" + ("-urgent" if lane is Lane.URGENT else "")


class IngestWorker:
    """A consumer with its collector, writer and maintenance threads."""

    def __init__(
        self,
        *,
        database_url: str,
        mqtt_url: str,
        settings: IngestSettings,
        clock: Clock,
        worker_index: int = 0,
        stats: IngestStats | None = None,
        maintenance: bool = True,
        drain: bool = False,
        lane: Lane = Lane.ALL,
    ) -> None:
        self.database_url = database_url
        self.lane = lane
        if lane is Lane.URGENT:
            # an urgent message never waits for a batch to fill
            settings = settings.model_copy(
                update={"flush_interval_ms": min(settings.flush_interval_ms, URGENT_FLUSH_MS)}
            )
        self.settings = settings
        self.clock = clock
        self.stats = stats or IngestStats()
        self.registry = DeviceRegistry(recheck_s=settings.unknown_device_recheck_s)
        self._inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._batches: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._stopping = threading.Event()
        self._connections = 0  # to the database, by the writer
        # set when one of the worker's threads died: the worker is no good and must be replaced
        # (run_ingest returns, ``vigil ingest`` restarts it); nothing it held was acknowledged
        self.failed = threading.Event()
        self.failure: str | None = None
        self._maintenance = maintenance
        self.consumer: MqttConsumer | JetStreamConsumer
        if is_nats(mqtt_url):
            # a clustered broker: durable JetStream consumers shared by every worker
            self.consumer = JetStreamConsumer(
                nats_url=mqtt_url,
                group=settings.share_group,
                receive_maximum=settings.receive_maximum,
                ack_wait_s=settings.ack_wait_s,
                replicas=settings.nats_replicas,
                inbox=self._inbox,
                on_subscribed=lambda: self.stats.update(lambda s: setattr(s, "subscribed", True)),
                lane=lane,
            )
        else:
            self.consumer = MqttConsumer(
                mqtt_url=mqtt_url,
                client_id=session_client_id(settings.client_id, worker_index, lane),
                # a single worker subscribes plainly: Mosquitto restores plain subscriptions
                # across its own restart but not shared ones (docs/ingest.md)
                share_group=settings.share_group if settings.workers > 1 else "",
                session_expiry_s=settings.session_expiry_s,
                receive_maximum=settings.receive_maximum,
                inbox=self._inbox,
                on_subscribed=lambda: self.stats.update(lambda s: setattr(s, "subscribed", True)),
                drain=drain,
                lane=lane,
            )
        self._threads = [
            threading.Thread(target=self._guarded, args=("collector", self._collect), daemon=True),
            threading.Thread(target=self._guarded, args=("writer", self._write), daemon=True),
        ]
        if maintenance:
            upkeep = functools.partial(
                scheduled.run_upkeep,
                database_url=database_url,
                settings=settings,
                clock=clock,
                stop=self._stopping,
            )
            self._threads.append(
                threading.Thread(target=self._guarded, args=("upkeep", upkeep), daemon=True)
            )
        for thread, name in zip(self._threads, ("collector", "writer", "upkeep"), strict=False):
            thread.name = f"ingest-{name}"

    def _guarded(self, name: str, target: Callable[[], None]) -> None:
        """Run one of the worker's threads; if it dies, the whole worker stops and says why."""
        try:
            target()
        except BaseException as exc:
            self.failure = f"ingest {name} thread died: {type(exc).__name__}: {exc}"
            log.critical("%s; stopping this worker so that it is restarted", self.failure)
            self.stats.update(lambda s: setattr(s, "stalled", self.failure))
            self.failed.set()
            self._stopping.set()
            if name == "collector":
                with contextlib.suppress(queue.Full):
                    self._batches.put_nowait(_STOP)  # the writer finishes what it has, then ends

    def start(self) -> None:
        """Start the threads, then the consumer."""
        for thread in self._threads:
            thread.start()
        self.consumer.start()

    def wait_subscribed(self, timeout: float = 15.0) -> bool:
        """Block until the broker confirmed the subscriptions."""
        return self.consumer.subscribed.wait(timeout)

    def stop(self, *, end_session: bool = False) -> None:
        """Flush what was collected (if the database takes it), then disconnect (ending the
        broker session too when ``end_session``)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.consumer.stop(end_session=end_session)

    # -- collector -------------------------------------------------------------------------------

    def _collect(self) -> None:
        flush_s = self.settings.flush_interval_ms / 1000
        size = self.settings.batch_size
        while not self._stopping.is_set():
            batch = Batch()
            deadline: float | None = None
            while True:
                self.stats.heartbeat = time.monotonic()  # this lane is alive (readiness)
                self.stats.broker_up = self.consumer.connected
                wait = 0.05 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    break
                try:
                    delivery = self._inbox.get(timeout=wait)
                except queue.Empty:
                    if self._stopping.is_set():
                        break
                    continue
                if deadline is None:
                    deadline = time.monotonic() + flush_s
                item = self._decode(delivery)
                batch.items.append(item)
                batch.points += _points(item.decoded)
                if batch.points >= size:
                    break
            if batch.items:
                self.stats.update(functools.partial(_add_received, count=len(batch)))
                if not self._hand_over(batch):
                    return  # the writer is gone: nothing of this batch was acknowledged
        self._hand_over(_STOP)

    def _hand_over(self, batch: Batch | None) -> bool:
        """Queue a batch for the writer; False when the writer died (the worker failed)."""
        while True:
            try:
                self._batches.put(batch, timeout=0.5)
                return True
            except queue.Full:
                if self.failed.is_set():
                    return False

    def _decode(self, delivery: Delivery) -> Received:
        now = self.clock.now()
        decoded = wire.decode(delivery.topic, delivery.payload, now_ms=self.clock.now_ms())
        return Received(delivery, decoded, now)

    # -- writer ----------------------------------------------------------------------------------

    def _write(self) -> None:
        writer: flows.Writer | None = None
        while True:
            batch = self._batches.get()
            if batch is _STOP:
                break
            started = time.perf_counter()
            result, writer = self._store_until_committed(batch, writer)
            if result is None:
                continue  # stopping with the database down: the broker redelivers later
            acked = self.consumer.ack(item.delivery for item in batch.items)
            _export(
                result,
                lane=str(self.lane),
                messages=len(batch),
                seconds=time.perf_counter() - started,
            )
            if result.rejected:
                log.warning(
                    "%d message(s) to dead_letters: %s",
                    len(result.rejected),
                    ", ".join(sorted(set(result.rejected))),
                )
            self.stats.update(
                functools.partial(_count, result=result, acked=acked, messages=len(batch))
            )
        if writer is not None:
            writer.conn.close()

    def _store_until_committed(
        self, batch: Batch, writer: flows.Writer | None
    ) -> tuple[WriteResult | None, flows.Writer | None]:
        delay = 0.1
        while True:
            try:
                if writer is None or writer.conn.closed or writer.conn.broken:
                    writer = self._connect()
                result = writer.store(batch)
                if not self.stats.database_up:
                    log.info("database is back; storing again")
                    self.stats.update(lambda s: setattr(s, "database_up", True))
                return result, writer
            except (flows.TransientError, psycopg.Error) as exc:
                if self.stats.database_up:
                    log.warning("cannot store a batch, holding acks and retrying: %s", exc)
                self.stats.update(_database_down)
                if writer is not None and (writer.conn.broken or writer.conn.closed):
                    writer.conn.close()
                    writer = None
                elif writer is not None and not isinstance(exc, flows.TransientError):
                    writer.rollback()
                if self._stopping.wait(delay):
                    return None, writer
                delay = min(delay * 2, 2.0)
            except Exception:
                # A bug, not an outage: keep the batch unacknowledged (the broker keeps it) and
                # say so loudly, rather than let the writer thread die and ingest go silent.
                log.exception("unexpected error storing a batch; holding acks and retrying")
                self.stats.update(_database_down)
                if writer is not None:
                    writer.conn.close()
                    writer = None
                if self._stopping.wait(2.0):
                    return None, writer

    def _connect(self) -> flows.Writer:
        conn = service.connect_writer(self.database_url)
        if self._connections:
            DATABASE_RECONNECTS.inc()
        self._connections += 1
        if not self.registry.devices:
            self.registry.load(conn)
        conn.commit()
        return flows.Writer(
            conn=conn,
            registry=self.registry,
            clock=self.clock,
            lane=self.lane,
        )


def tune_gc() -> None:
    """Collect garbage less often in a process that only runs ingest (process-wide)."""
    # Decoding allocates many short-lived objects; the default thresholds spend about a
    # quarter of ingest's CPU in the collector.
    gc.collect()
    gc.freeze()  # what exists now (modules, settings) is never scanned again
    gc.set_threshold(50_000, 20, 100)


def _points(decoded: object) -> int:
    if isinstance(decoded, wire.TelemetryBatch):
        return len(decoded.samples)
    if isinstance(decoded, wire.EventBatch):
        return len(decoded.events)
    return 1


def _export(result: WriteResult, *, lane: str, messages: int, seconds: float) -> None:
    """Count a committed batch in the process's metrics."""
    MESSAGES_STORED.labels(lane=lane).inc(messages - result.dead_letters)
    POINTS_STORED.labels(lane=lane).inc(result.points_stored)
    POINTS_DUPLICATE.labels(lane=lane).inc(result.points_offered - result.points_stored)
    for reason in result.rejected:
        DEAD_LETTERS.labels(reason=reason).inc()
    BATCH_COMMIT.labels(lane=lane).observe(seconds)


def _database_down(stats: IngestStats) -> None:
    stats.database_up = False
    stats.database_errors += 1


def _add_received(stats: IngestStats, *, count: int) -> None:
    stats.received += count


def _count(stats: IngestStats, *, result: WriteResult, acked: int, messages: int) -> None:
    stats.acked += acked
    stats.batches += 1
    stats.messages_stored += messages - result.dead_letters
    stats.points_stored += result.points_stored
    stats.points_duplicate += result.points_offered - result.points_stored
    stats.events_stored += result.events_stored
    stats.command_results_stored += result.command_results_stored
    stats.dead_letters += result.dead_letters
    stats.rejected.update(result.rejected)


# -- draining the sessions of removed workers ------------------------------------------------


def drain_removed_sessions(
    *,
    database_url: str,
    mqtt_url: str,
    settings: IngestSettings,
    clock: Clock,
    quiet_s: float = 2.0,
) -> dict[str, int]:
    """Scaling down from M to N workers: resume each session of workers N..M-1, store what it
    holds (subscribed to nothing, so nothing new is routed to it), then end it at the broker.
    Returns the messages stored from each drained session.
    Before, a stopped worker's session kept receiving its share of a shared subscription until
    it expired, and those messages waited there unstored."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        known = service.registered_sessions(conn, prefix=settings.client_id)
    removed = flows.removed_sessions(known, prefix=settings.client_id, workers=settings.workers)
    drained: dict[str, int] = {}
    for client_id in removed:
        found = flows.session_index(client_id, prefix=settings.client_id)
        assert found is not None
        index, lane = found
        worker = IngestWorker(
            database_url=database_url,
            mqtt_url=mqtt_url,
            settings=settings,
            clock=clock,
            worker_index=index,
            maintenance=False,
            drain=True,
            lane=lane,
        )
        worker.start()
        try:
            worker.wait_subscribed(15)
            stats = worker.stats
            while True:
                seen = stats.received
                # quiet: nothing more arrived for a while and everything taken is stored
                if not stats.wait_for(lambda s, seen=seen: s.received > seen, timeout=quiet_s):
                    if stats.wait_for(lambda s: s.acked >= s.received, timeout=quiet_s):
                        break
        finally:
            worker.stop(end_session=True)
        with psycopg.connect(database_url, autocommit=True) as conn:
            service.forget_session(conn, client_id=client_id)
        drained[client_id] = worker.stats.messages_stored
        log.info(
            "drained %d message(s) and ended the session of removed worker %s",
            drained[client_id],
            client_id,
        )
    return drained


# -- entry point ---------------------------------------------------------------------------------


def run_ingest(
    *,
    database_url: str,
    mqtt_url: str,
    settings: IngestSettings | Settings,
    clock: Clock,
    stop_event: threading.Event,
    worker_index: int = 0,
    stats: IngestStats | None = None,
    lanes: Sequence[Lane] = (Lane.TELEMETRY, Lane.URGENT),
) -> IngestStats:
    """Consume and store until ``stop_event`` is set (blocking; run it in a thread to embed).

    Both lanes by default (docs/ingest.md): telemetry and the rest, and the urgent channels on
    their own subscription and writer, so that an alarm never waits behind a telemetry backlog.
    ``vigil ingest`` runs each lane in a process of its own (``lanes`` of one)."""
    section = settings.ingest if isinstance(settings, Settings) else settings
    workers = [
        IngestWorker(
            database_url=database_url,
            mqtt_url=mqtt_url,
            settings=section,
            clock=clock,
            worker_index=worker_index,
            stats=stats if index == 0 else None,
            maintenance=lane is Lane.TELEMETRY,  # storage upkeep once per worker
            lane=lane,
        )
        for index, lane in enumerate(lanes)
    ]
    for worker in workers:
        worker.start()
    try:
        # until told to stop, or until one of the workers' threads died (then the caller
        # restarts it: a dead collector or writer must never leave ingest silently idle)
        while not stop_event.wait(0.5):
            if any(worker.failed.is_set() for worker in workers):
                break
    finally:
        for worker in workers:
            worker.stop()
    failed = [worker for worker in workers if worker.failed.is_set()]
    if failed:
        raise WorkerFailed(failed[0].failure or "an ingest thread died")
    for other in workers[1:]:
        merge_urgent(workers[0].stats, other.stats)
    return workers[0].stats


def merge_urgent(stats: IngestStats, urgent: IngestStats) -> None:
    """Add the urgent lane's counts to the telemetry lane's (one worker's totals)."""

    def add(into: IngestStats) -> None:
        into.received += urgent.received
        into.acked += urgent.acked
        into.messages_stored += urgent.messages_stored
        into.events_stored += urgent.events_stored
        into.command_results_stored += urgent.command_results_stored
        into.dead_letters += urgent.dead_letters
        into.rejected.update(urgent.rejected)

    stats.update(add)


class WorkerFailed(RuntimeError):
    """One of an ingest worker's threads died; the worker stopped and must be restarted."""
