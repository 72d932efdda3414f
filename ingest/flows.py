"""Ingest decisions: what to accept, what each batch writes, and the storage upkeep.

The processes that run them are ``ingest.worker`` (``run_ingest`` embeds ingest in another
process, the demo; ``vigil ingest`` runs the same worker, see ``ingest.cli``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

import psycopg

from ingest import service
from ingest.binary import Grouped, encode_rows, group_samples
from ingest.consumer import URGENT_TOPIC_PREFIXES
from ingest.models import (
    Accepted,
    Batch,
    DeadLetter,
    IngestReason,
    Lane,
    Received,
    WriteResult,
)
from ingest.registry import DeviceRegistry
from vigil import notify
from vigil.catalog import DeviceKind, is_metric
from vigil.clock import Clock, from_ms, to_ms
from vigil.config import IngestSettings
from vigil.db import StalledJob, stalled_jobs
from vigil.wire import (
    PREFIX,
    Channel,
    Command,
    CommandResult,
    EventBatch,
    Health,
    Rejected,
    Sample,
    Status,
    TelemetryBatch,
)

log = logging.getLogger(__name__)

ROLLUP_KINDS = frozenset(
    {DeviceKind.ENERGY_METER, DeviceKind.WATER_METER, DeviceKind.LIGHT_POLE, DeviceKind.HIGH_MAST}
)
# Metrics every device has, whatever its kind: the gateway's reachability event
# (docs/wire-format.md: {"m": "available", "v": 0} when a device stops answering).
DEVICE_WIDE_METRICS = frozenset({"available"})
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Failures of the database or the connection, not of the batch: retried as they are.
TRANSIENT_ERRORS = (
    psycopg.OperationalError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)


# -- validation against the registry -------------------------------------------------------------


# Traffic under vigil/ that is not for ingest: alarms the platform publishes to people
# (alerts.mqtt_topic_prefix, default vigil/alerts) and commands to gateways (vigil/v1/cmd/...).
NOT_FOR_INGEST = ("vigil/alerts/", f"{PREFIX}/{Channel.COMMAND}/")


class Ignored:
    """A message ingest subscribes to but does not store (acknowledged with its batch)."""


IGNORED = Ignored()


def judge(
    item: Received, *, registry: DeviceRegistry, lane: Lane = Lane.ALL
) -> Accepted | DeadLetter | Ignored:
    """Accept a decoded message whose gateway, device and metrics are registered, else refuse;
    the platform's own traffic (commands, alerts) is ignored, and so is what the urgent lane
    takes when this is the telemetry lane."""
    decoded = item.decoded
    topic = item.delivery.topic
    if isinstance(decoded, Command) or topic.startswith(NOT_FOR_INGEST):
        return IGNORED
    if lane is Lane.TELEMETRY and topic.startswith(URGENT_TOPIC_PREFIXES):
        return IGNORED
    if isinstance(decoded, Rejected):
        return _dead(item, str(decoded.reason), decoded.detail, decoded.gateway, decoded.device)
    gateway = decoded.gateway
    if gateway not in registry.gateways:
        return _dead(
            item,
            IngestReason.UNKNOWN_GATEWAY,
            f"gateway {gateway!r} is not registered",
            gateway,
            getattr(decoded, "device", None),
        )
    if isinstance(decoded, Status | Health):
        return Accepted(decoded, item.delivery.topic, item.delivery.payload, item.received_at)
    device = decoded.device
    info = registry.devices.get(device)
    if info is None:
        return _dead(
            item,
            IngestReason.UNKNOWN_DEVICE,
            f"device {device!r} is not registered",
            gateway,
            device,
        )
    if info.gateway_id != gateway:
        detail = f"device {device!r} is registered under gateway {info.gateway_id!r}"
        return _dead(item, IngestReason.WRONG_GATEWAY, detail, gateway, device)
    if info.decommissioned:
        return _dead(
            item,
            IngestReason.DECOMMISSIONED_DEVICE,
            f"device {device!r} is decommissioned",
            gateway,
            device,
        )
    names: Iterable[str] = ()
    if isinstance(decoded, TelemetryBatch):
        names = {s.metric for s in decoded.samples}
    elif isinstance(decoded, EventBatch):
        names = {e.metric for e in decoded.events}
    foreign = sorted(
        n for n in names if n not in DEVICE_WIDE_METRICS and not is_metric(info.kind, n)
    )
    if foreign:
        detail = f"not metrics of a {info.kind}: {foreign[:10]}"
        return _dead(item, IngestReason.UNKNOWN_METRIC, detail, gateway, device)
    return Accepted(
        decoded, item.delivery.topic, item.delivery.payload, item.received_at, info.kind
    )


def _judge_one(
    item: Received, *, registry: DeviceRegistry, lane: Lane
) -> Accepted | DeadLetter | Ignored:
    """``judge``, with any failure on the message itself turned into its dead letter."""
    try:
        return judge(item, registry=registry, lane=lane)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return _dead(item, IngestReason.STORAGE_ERROR, detail, None, None)


def _dead(
    item: Received, reason: str, detail: str, gateway: str | None, device: str | None
) -> DeadLetter:
    return DeadLetter(
        topic=item.delivery.topic,
        payload=item.delivery.payload,
        reason=str(reason),
        detail=detail,
        received_at=item.received_at,
        gateway_id=gateway,
        device_id=device,
    )


# -- what a batch writes -------------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    """Rows one transaction writes, derived from the accepted messages of a batch."""

    telemetry: list[tuple[str, Sequence]] = field(default_factory=list)
    points: int = 0
    days: set[int] = field(default_factory=set)  # days (ms // DAY_MS) holding samples
    rollup_hours: set[int] = field(default_factory=set)  # ms of hour starts
    state: dict[tuple[str, str], service.StateRow] = field(default_factory=dict)
    events: list[service.EventRow] = field(default_factory=list)
    results: list[tuple[Accepted, service.CommandResultRow]] = field(default_factory=list)
    statuses: dict[str, Status] = field(default_factory=dict)
    gateway_events: list[Status] = field(default_factory=list)  # statuses with an event
    healths: dict[str, Health] = field(default_factory=dict)


def plan_writes(accepted: Sequence[Accepted]) -> Plan:
    """Group accepted messages into the rows to write; keep only the newest state per metric."""
    plan = Plan()
    for item in accepted:
        message = item.message
        if isinstance(message, TelemetryBatch):
            plan.telemetry.append((message.device, message.samples))
            plan.points += len(message.samples)
            # one pass per message: time span and newest sample per metric (hot path)
            newest: dict[str, Sample] = {}
            first = last = message.samples[0].ts
            for s in message.samples:
                ts = s.ts
                if ts < first:
                    first = ts
                elif ts > last:
                    last = ts
                known = newest.get(s.metric)
                if known is None or known.ts < ts:
                    newest[s.metric] = s
            plan.days.update(range(first // DAY_MS, last // DAY_MS + 1))
            if item.kind in ROLLUP_KINDS:
                plan.rollup_hours.update(
                    h * HOUR_MS for h in range(first // HOUR_MS, last // HOUR_MS + 1)
                )
            for s in newest.values():
                _keep_newest(plan, message.device, s.metric, s.ts, s.value, s.good)
        elif isinstance(message, EventBatch):
            for e in message.events:
                plan.events.append(
                    service.EventRow(
                        message.device, e.metric, e.ts, e.value, e.previous, message.seq
                    )
                )
                if e.value is not None:
                    _keep_newest(plan, message.device, e.metric, e.ts, e.value, True)
        elif isinstance(message, CommandResult):
            row = service.CommandResultRow(
                message.command_id,
                message.device,
                str(message.outcome),
                message.ts,
                message.detail,
            )
            plan.results.append((item, row))
        elif isinstance(message, Status):
            if message.event is not None:
                plan.gateway_events.append(message)
            if message.will:
                # the will's ts is the gateway's connect time: offline since the broker said so
                message = replace(message, ts=max(message.ts, to_ms(item.received_at)))
            known = plan.statuses.get(message.gateway)
            if known is None or known.ts <= message.ts:
                plan.statuses[message.gateway] = message
        elif isinstance(message, Health):
            seen = plan.healths.get(message.gateway)
            if seen is None or seen.ts <= message.ts:
                plan.healths[message.gateway] = message
    return plan


def _keep_newest(plan: Plan, device: str, metric: str, ts: int, value: float, good: bool) -> None:
    key = (device, metric)
    known = plan.state.get(key)
    if known is None or known.ts < ts:
        plan.state[key] = service.StateRow(device, metric, ts, value, good)


# -- storing a batch -----------------------------------------------------------------------------


class TransientError(Exception):
    """The batch could not be written now; retry it later (nothing was committed)."""


@dataclass(slots=True)
class Writer:
    """Writes batches on one connection: everything of a batch commits together, or nothing."""

    conn: psycopg.Connection
    registry: DeviceRegistry
    clock: Clock
    partitioned_days: set[int] = field(default_factory=set)
    # sorted metric list -> telemetry_metric_sets.id, as committed; ids created by the open
    # transaction wait in new_metric_sets until it commits (a rollback would orphan them)
    metric_sets: dict[tuple[str, ...], int] = field(default_factory=dict)
    new_metric_sets: dict[tuple[str, ...], int] = field(default_factory=dict)
    lane: Lane = Lane.ALL

    def store(self, batch: Batch) -> WriteResult:
        """Validate and write a batch in one transaction; raises TransientError to retry it."""
        try:
            return self._store(batch)
        except psycopg.errors.CheckViolation as exc:
            if "no partition" not in str(exc):
                raise
            self.partitioned_days.clear()  # dropped behind our back: ensure again
            self.rollback()
            raise TransientError(str(exc)) from exc
        except TRANSIENT_ERRORS as exc:
            self.rollback()
            raise TransientError(str(exc)) from exc

    def rollback(self) -> None:
        """End a failed transaction, if the connection still allows it."""
        self.new_metric_sets.clear()  # created in the transaction that ends here
        if not self.conn.closed and not self.conn.broken:
            try:
                self.conn.rollback()
            except psycopg.Error:
                pass

    def _store(self, batch: Batch) -> WriteResult:
        items = batch.items
        self.registry.refresh(
            self.conn,
            devices={
                (r.decoded.device, r.decoded.gateway)
                for r in items
                if isinstance(r.decoded, TelemetryBatch | EventBatch | CommandResult)
            },
            gateways={r.decoded.gateway for r in items if not isinstance(r.decoded, Rejected)},
        )
        self.conn.commit()  # end the read-only transaction of the look-ups
        verdicts = [_judge_one(item, registry=self.registry, lane=self.lane) for item in items]
        accepted = [v for v in verdicts if isinstance(v, Accepted)]
        letters = [v for v in verdicts if isinstance(v, DeadLetter)]
        plan = plan_writes(accepted)
        self._ensure_partitions(plan.days)
        try:
            with self.conn.transaction():
                result = self._write(plan, letters, redelivery=batch.redelivery)
            self._commit_metric_sets()
        except TRANSIENT_ERRORS:
            self.new_metric_sets.clear()
            raise
        except Exception as exc:
            self.new_metric_sets.clear()
            if isinstance(exc, psycopg.errors.CheckViolation) and "no partition" in str(exc):
                raise
            # Something in the batch itself is refused (by the database, or on its way there,
            # such as text PostgreSQL cannot hold): store message by message and dead-letter
            # the ones that fail, rather than stall or drop the batch.
            log.warning(
                "batch refused (%s: %s); storing message by message", type(exc).__name__, exc
            )
            with self.conn.transaction():
                result = self._write_one_by_one(accepted, letters)
            self._commit_metric_sets()
        return result

    def _encode(self, grouped: Grouped, refs: dict[str, int]) -> bytes:
        lists = grouped.metric_lists()
        set_ids = self._metric_set_ids(set(lists.values()))
        return encode_rows(grouped.rows, metric_lists=lists, device_refs=refs, set_ids=set_ids)

    def _commit_metric_sets(self) -> None:
        self.metric_sets.update(self.new_metric_sets)
        self.new_metric_sets.clear()

    def _metric_set_ids(self, sets: set[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
        known, new = self.metric_sets, self.new_metric_sets
        missing = [s for s in sets if s not in known and s not in new]
        if missing:
            new.update(service.metric_sets(self.conn, sets=missing))
        return {s: known[s] if s in known else new[s] for s in sets}

    def _ensure_partitions(self, days: set[int]) -> None:
        missing = sorted(days - self.partitioned_days)
        if not missing:
            return  # (on TimescaleDB the function creates nothing: chunks come by themselves)
        first, last = from_ms(missing[0] * DAY_MS).date(), from_ms(missing[-1] * DAY_MS).date()
        try:
            service.ensure_partitions(self.conn, first_day=first, last_day=last)
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            # Another worker created the same partition at the same moment: it exists now.
            self.conn.rollback()
            service.ensure_partitions(self.conn, first_day=first, last_day=last)
        self.partitioned_days.update(missing)

    def _write(self, plan: Plan, letters: list[DeadLetter], *, redelivery: bool) -> WriteResult:
        conn = self.conn
        now = self.clock.now()
        stored = self._write_telemetry(plan, redelivery=redelivery)
        changed = service.upsert_device_state(conn, rows=list(plan.state.values()))
        event_notices = service.insert_events(conn, rows=plan.events, received_at=now)
        result_rows, refused = self._check_commands(plan.results)
        letters = letters + refused
        command_notices = service.insert_command_results(conn, rows=result_rows, received_at=now)
        for reported in plan.gateway_events:
            log.warning(
                "gateway %s reports %s: %s", reported.gateway, reported.event, reported.detail
            )
            service.record_gateway_event(
                conn,
                gateway_id=reported.gateway,
                event=str(reported.event),
                ts=reported.ts,
                detail=reported.detail,
                now=now,
            )
        for status in plan.statuses.values():
            service.upsert_gateway_state(
                conn, gateway_id=status.gateway, state=str(status.state), ts=status.ts, now=now
            )
        for health in plan.healths.values():
            service.upsert_gateway_health(
                conn,
                gateway_id=health.gateway,
                ts=health.ts,
                figures=(
                    health.polls_per_s,
                    health.errors,
                    health.buffer_depth,
                    health.dropped,
                    health.devices_unavailable,
                ),
                now=now,
            )
        service.insert_dead_letters(conn, letters=letters)
        if plan.rollup_hours:
            service.mark_rollup_hours(conn, hours_ms=plan.rollup_hours, now=now)
        # Queued in this transaction: PostgreSQL delivers them exactly when it commits.
        notify.send(conn, notify.EVENTS, [notify.event_payload(n) for n in event_notices])
        notify.send(conn, notify.COMMANDS, [notify.command_payload(n) for n in command_notices])
        notify.send(conn, notify.STATE, notify.state_payloads(changed))
        return WriteResult(
            points_offered=plan.points,
            points_stored=stored,
            events_stored=len(event_notices),
            command_results_stored=len(command_notices),
            dead_letters=len(letters),
            states_changed=len(changed),
            rejected=tuple(d.reason for d in letters),
        )

    def _write_telemetry(self, plan: Plan, *, redelivery: bool) -> int:
        if not plan.telemetry:
            return 0
        devices = self.registry.devices
        refs = {device: devices[device].ref for device, _ in plan.telemetry}
        grouped = group_samples(plan.telemetry)
        data = self._encode(grouped, refs)
        stored: int | None = None
        if not redelivery:
            # Fast path: COPY straight into telemetry_rows. A row already there (a redelivery
            # the broker did not flag) fails the COPY; the savepoint then takes the merge path.
            try:
                with self.conn.transaction():
                    service.copy_telemetry(self.conn, data=data)
                stored = grouped.points
            except psycopg.errors.UniqueViolation:
                pass
        if stored is None:
            stored = service.copy_telemetry_deduplicated(
                self.conn, data=data, received_at=self.clock.now()
            )
        # A (device, metric, ts) offered twice in this batch: merged after the first, so an
        # equal value is a duplicate and a different one a recorded conflict.
        repeats = grouped.repeats
        while repeats:
            again = group_samples(repeats)
            data = self._encode(again, refs)
            stored += service.copy_telemetry_deduplicated(
                self.conn, data=data, received_at=self.clock.now()
            )
            repeats = again.repeats
        return stored

    def _check_commands(
        self, results: list[tuple[Accepted, service.CommandResultRow]]
    ) -> tuple[list[service.CommandResultRow], list[DeadLetter]]:
        if not results:
            return [], []
        issued = service.issued_commands(self.conn, ids=sorted({r.command_id for _, r in results}))
        rows: list[service.CommandResultRow] = []
        refused: list[DeadLetter] = []
        for item, row in results:
            if issued.get(row.command_id) == row.device_id:
                rows.append(row)
                continue
            refused.append(
                DeadLetter(
                    topic=item.topic,
                    payload=item.payload,
                    reason=IngestReason.UNKNOWN_COMMAND,
                    detail=f"no command {row.command_id!r} was issued to {row.device_id!r}",
                    received_at=item.received_at,
                    gateway_id=item.message.gateway,
                    device_id=row.device_id,
                )
            )
        return rows, refused

    def _write_one_by_one(self, accepted: list[Accepted], letters: list[DeadLetter]) -> WriteResult:
        totals = [0, 0, 0, 0, 0]
        rejected: list[str] = []
        refused: list[DeadLetter] = []
        for item in accepted:
            try:
                with self.conn.transaction():
                    part = self._write(plan_writes([item]), [], redelivery=True)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                self.new_metric_sets.clear()  # the savepoint took back any it created
                refused.append(
                    DeadLetter(
                        item.topic,
                        item.payload,
                        IngestReason.STORAGE_ERROR,
                        f"{type(exc).__name__}: {exc}",
                        item.received_at,
                        getattr(item.message, "gateway", None),
                        getattr(item.message, "device", None),
                    )
                )
                continue
            totals[0] += part.points_offered
            totals[1] += part.points_stored
            totals[2] += part.events_stored
            totals[3] += part.command_results_stored
            totals[4] += part.states_changed
            rejected.extend(part.rejected)
        all_letters = letters + refused
        service.insert_dead_letters(self.conn, letters=all_letters)
        return WriteResult(
            points_offered=totals[0],
            points_stored=totals[1],
            events_stored=totals[2],
            command_results_stored=totals[3],
            dead_letters=len(all_letters) + len(rejected),
            states_changed=totals[4],
            rejected=tuple(d.reason for d in all_letters) + tuple(rejected),
        )


# -- scaling down ----------------------------------------------------------------------------------


def session_index(client_id: str, *, prefix: str) -> tuple[int, Lane] | None:
    """The worker index and lane of a session ``<prefix>-<index>[-urgent]``, else None."""
    name, lane = client_id, Lane.TELEMETRY
    if name.endswith("-urgent"):
        name, lane = name[: -len("-urgent")], Lane.URGENT
    head, _, index = name.rpartition("-")
    if head != prefix or not index.isdigit():
        return None
    return int(index), lane


def removed_sessions(client_ids: Iterable[str], *, prefix: str, workers: int) -> list[str]:
    """Sessions of workers no longer run (index ≥ ``workers``), both lanes."""
    removed = []
    for client_id in client_ids:
        found = session_index(client_id, prefix=prefix)
        if found is not None and found[0] >= workers:
            removed.append(client_id)
    return removed


# -- broker capacity -----------------------------------------------------------------------------


def broker_capacity_warning(
    *, rate_per_s: float, workers: int, max_queued: int, outage_s: float
) -> str | None:
    """Why the broker would drop messages during a database outage of ``outage_s``, or None.

    While the database is down ingest acknowledges nothing, so the broker must queue what the
    fleet sends meanwhile: each worker's session holds its share (all of it for one worker).
    """
    if max_queued == 0 or rate_per_s <= 0:
        return None  # unlimited, or nothing measured yet
    per_session = rate_per_s * outage_s / max(workers, 1)
    if per_session <= max_queued:
        return None
    return (
        f"the broker queues at most {max_queued} messages per session, but at "
        f"{rate_per_s:.0f} messages/s a {outage_s:.0f} s database outage needs about "
        f"{per_session:.0f} per session ({workers} worker(s)): the broker would drop the rest. "
        f"Raise Mosquitto's max_queued_messages (0 = unlimited) and set "
        f"ingest.broker_max_queued_messages to match (docs/ingest.md, broker settings)"
    )


def check_broker_capacity(
    conn: psycopg.Connection, *, settings: IngestSettings, now: datetime
) -> str | None:
    """``broker_capacity_warning`` for the fleet's rate over the last ten minutes."""
    rate = service.recent_message_rate(conn, since=now - timedelta(minutes=10))
    return broker_capacity_warning(
        rate_per_s=rate,
        workers=settings.workers,
        max_queued=settings.broker_max_queued_messages,
        outage_s=settings.outage_tolerance_s,
    )


# -- storage upkeep ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upkeep:
    """What one storage maintenance run did."""

    partitions_created: int
    partitions_dropped: tuple[str, ...]
    hours_rolled_up: int
    # TimescaleDB policy jobs its scheduler fails or does not run, which this run ran itself
    jobs_stalled: tuple[StalledJob, ...] = ()


def maintain_storage(
    conn: psycopg.Connection, *, today: date, settings: IngestSettings, max_rounds: int = 20
) -> Upkeep:
    """Create partitions ahead, drop those past retention, roll up pending hours (both paths),
    and run the TimescaleDB policy jobs (compression, retention) its scheduler cannot."""
    created = service.ensure_partitions(
        conn,
        first_day=today - timedelta(days=1),
        last_day=today + timedelta(days=settings.partitions_ahead_days),
    )
    dropped = service.drop_partitions_before(
        conn, day=today - timedelta(days=settings.retention_days)
    )
    conn.commit()
    hours = 0
    for _ in range(max_rounds):
        done = service.refresh_rollups(conn)
        conn.commit()
        if done == 0:
            break
        hours += done
    # TimescaleDB: its scheduler compresses and drops chunks; when it fails to (every job fails
    # on PostgreSQL 15.20) or does not run, ingest does the same work on its own clock.
    stalled = tuple(stalled_jobs(conn, hypertable="telemetry_rows"))
    names = {job.name for job in stalled}
    if "policy_retention" in names:
        dropped += service.drop_chunks_before(
            conn, day=today - timedelta(days=settings.retention_days)
        )
    if "policy_compression" in names:
        service.compress_chunks_before(
            conn, day=today - timedelta(days=settings.compress_after_days)
        )
    conn.commit()
    return Upkeep(created, tuple(dropped), hours, stalled)
