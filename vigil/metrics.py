"""Every metric Vigil exports, in one place (docs/operations.md lists them, the Grafana dashboard
in docs/grafana-dashboard.json draws them).

Names follow Prometheus's conventions: ``vigil_`` first, the unit in the name (``_seconds``,
``_messages``), counters end in ``_total``. The code that does the work counts it here
(``POLLS.labels(outcome="ok").inc()``); figures that live in the database (open incidents and
alarms, SLA breaches, TimescaleDB job failures) are read at scrape time by a collector the
process's composition root registers (``DatabaseCollector``).

A process that forks workers (``vigil ingest``, ``vigil api --workers N``) calls
``use_multiprocess_dir`` before its workers start: each worker then writes its figures to files
there and the supervisor's endpoint adds them up (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# -- gateway ---------------------------------------------------------------------------------------
POLLS = Counter("vigil_gateway_polls_total", "Device polls, by outcome (ok, failed)", ["outcome"])
POLL_LAG = Histogram(
    "vigil_gateway_poll_lag_seconds",
    "How long after its slot a poll started",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BUFFER_DEPTH = Gauge(
    "vigil_gateway_buffer_messages",
    "Messages waiting in the gateway's on-disk buffer",
    multiprocess_mode="livesum",
)
BUFFER_DROPPED = Counter(
    "vigil_gateway_buffer_dropped_messages_total",
    "Messages the full buffer dropped (oldest first)",
)
DEVICES_UNAVAILABLE = Gauge(
    "vigil_gateway_devices_unavailable",
    "Devices whose last poll failed",
    multiprocess_mode="livesum",
)

# -- ingest ----------------------------------------------------------------------------------------
MESSAGES_STORED = Counter(
    "vigil_ingest_messages_total", "Messages stored, by lane (telemetry, urgent)", ["lane"]
)
POINTS_STORED = Counter(
    "vigil_ingest_points_stored_total", "Telemetry points stored (duplicates excluded)", ["lane"]
)
POINTS_DUPLICATE = Counter(
    "vigil_ingest_duplicate_points_total", "Points offered again and not stored twice", ["lane"]
)
DEAD_LETTERS = Counter(
    "vigil_ingest_dead_letters_total", "Messages set aside in dead_letters, by reason", ["reason"]
)
BATCH_COMMIT = Histogram(
    "vigil_ingest_batch_commit_seconds",
    "Time to store and commit one batch",
    ["lane"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# -- every process ---------------------------------------------------------------------------------
BROKER_RECONNECTS = Counter(
    "vigil_broker_reconnects_total", "Connections to the broker made again after a loss"
)
DATABASE_RECONNECTS = Counter(
    "vigil_database_reconnects_total", "Connections to the database made again after a loss"
)

# -- compliance and alerts -------------------------------------------------------------------------
DECISIONS = Counter(
    "vigil_rule_decisions_total",
    "Decisions written to the compliance log, by rule ID and entry kind",
    ["rule", "kind"],
)
NOTIFICATIONS = Counter(
    "vigil_notification_deliveries_total",
    "Notification delivery attempts, by channel and outcome",
    ["channel", "outcome"],
)

# -- the API ---------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "vigil_http_requests_total",
    "HTTP requests, by method, route and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "vigil_http_request_duration_seconds",
    "Time to answer an HTTP request, by route",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def use_multiprocess_dir() -> Path:
    """Before forking workers: make every process of this tree write its figures to one fresh
    folder (set in the environment, so spawned workers inherit it). Returns the folder."""
    path = Path(tempfile.mkdtemp(prefix="vigil-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def worker_exited(pid: int) -> None:
    """Forget the live gauges of a worker process that ended (multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text a scrape gets: this process's figures (or, in multiprocess mode, every worker's
    added up) and the ``extra`` collectors'."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Forward(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


class _Forward(Collector):
    """The process-wide registry's metrics, inside another registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator:
        return iter(self._source.collect())


# A reading: labels and value. A reader runs on one database connection at scrape time.
Reading = tuple[dict[str, str], float]
Reader = Callable[..., Iterable[Reading]]


class DatabaseCollector(Collector):
    """Figures read from the database at each scrape (the truth lives there, shared by every
    engine, not in one process): ``add(name, help, labels, reader)`` where ``reader(conn)``
    returns (labels, value) pairs; ``counter=True`` for a count that only grows (``_total``)."""

    def __init__(self, connect: Callable[[], object]) -> None:
        self._connect = connect  # a context manager giving a connection (a pool's .connection)
        self._readers: list[tuple[str, str, tuple[str, ...], Reader, bool]] = []

    def add(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...],
        reader: Reader,
        *,
        counter: bool = False,
    ) -> None:
        """Read ``name`` with ``reader(conn)`` at every scrape."""
        self._readers.append((name, help, labels, reader, counter))

    def names(self) -> set[str]:
        """The names a scrape shows (counters with ``_total``)."""
        return {name + ("_total" if counter else "") for name, *_, counter in self._readers}

    def collect(self) -> Iterator[Metric]:
        try:
            with self._connect() as conn:  # type: ignore[attr-defined]
                families: list[Metric] = []
                for name, help, labels, reader, counter in self._readers:
                    kind = CounterMetricFamily if counter else GaugeMetricFamily
                    family = kind(name, help, labels=list(labels))
                    for values, value in reader(conn):
                        family.add_metric([values.get(label, "") for label in labels], value)
                    families.append(family)
        except Exception as exc:  # the database is down: /readyz says so; the scrape still works
            log.debug("database gauges not read: %s", exc)
            return iter(())
        return iter(families)
