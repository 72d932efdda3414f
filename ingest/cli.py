"""``vigil ingest [--workers N]``: consume MQTT into PostgreSQL with N worker processes.

Each worker has two lanes (docs/ingest.md), and each lane runs in a process of its own: the
telemetry lane (MQTT client ``<client_id>-<index>``, a persistent session; niced by
``telemetry_niceness``) and the urgent lane (``<client_id>-<index>-urgent``: events, command
results, gateway status). With several workers the broker splits messages among them (shared
subscriptions). This process supervises the lanes and restarts any that dies.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from vigil.clock import make_clock
from vigil.config import Settings
from vigil.ops import add_metrics_port

if TYPE_CHECKING:
    from ingest.models import IngestStats, Lane

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ingest`` subcommand."""
    parser = sub.add_parser("ingest", help="consume MQTT and store it (N workers)")
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: [ingest] workers)"
    )
    parser.add_argument(
        "--broker",
        default=None,
        metavar="URL",
        help="where to consume: mqtt://host:port (Mosquitto, default: mqtt_url) or "
        "nats://a:4222,b:4222 (a NATS cluster's JetStream, docs/ingest.md)",
    )
    add_metrics_port(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.jetstream import is_nats
    from vigil.embedded import endpoints

    workers = args.workers or settings.ingest.workers
    if workers < 1:
        print("vigil ingest: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and not settings.ingest.share_group:
        print("vigil ingest: several workers need a share_group ([ingest])", file=sys.stderr)
        return 2
    # the worker count decides the subscription (shared only for several workers)
    settings = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"workers": workers})}
    )
    if args.broker:
        settings = settings.model_copy(update={"mqtt_url": args.broker})
    with endpoints(settings) as where:
        _warn_about_broker_capacity(where.database_url, settings)
        if not is_nats(where.mqtt_url):  # JetStream's consumers are shared: nothing to drain
            _drain_removed_workers(where.database_url, where.mqtt_url, settings)
        port = settings.metrics_port if args.metrics_port is None else args.metrics_port
        return _supervise(where.database_url, where.mqtt_url, settings, workers, port)


def _warn_about_broker_capacity(database_url: str, settings: Settings) -> None:
    """Say at start when the broker cannot bridge a database outage at the fleet's rate."""
    import psycopg

    from ingest.flows import check_broker_capacity

    clock = make_clock(
        kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
    )
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            warning = check_broker_capacity(conn, settings=settings.ingest, now=clock.now())
    except psycopg.Error as exc:
        log.info("broker capacity not checked (database unavailable: %s)", exc)
        return
    if warning:
        log.warning("%s", warning)
        print(f"vigil ingest: warning: {warning}", file=sys.stderr, flush=True)


def _drain_removed_workers(database_url: str, mqtt_url: str, settings: Settings) -> None:
    """Before starting N workers: drain and end the sessions of workers N and above, then
    register the sessions of the N (their client ids) for the next scale-down."""
    import psycopg

    from ingest import service
    from ingest.models import Lane
    from ingest.worker import drain_removed_sessions, session_client_id

    clock = make_clock(
        kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
    )
    try:
        drained = drain_removed_sessions(
            database_url=database_url, mqtt_url=mqtt_url, settings=settings.ingest, clock=clock
        )
        with psycopg.connect(database_url, autocommit=True) as conn:
            for index in range(settings.ingest.workers):
                for lane in (Lane.TELEMETRY, Lane.URGENT):
                    client_id = session_client_id(settings.ingest.client_id, index, lane)
                    service.register_session(conn, client_id=client_id, at=clock.now())
    except psycopg.Error as exc:
        log.warning("sessions of removed workers not checked (database unavailable: %s)", exc)
        return
    if drained:
        listed = ", ".join(f"{c} ({n} messages)" for c, n in drained.items())
        print(f"ingest: drained the sessions of removed workers: {listed}", flush=True)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# A lane's figures for its supervisor's /readyz, in memory both share: the collector's latest
# pass (time.monotonic, the same clock in every process), broker up, database up.
STATUS_FIELDS = 3
STALLED_AFTER_S = 15.0


def _report_status(stats: IngestStats, status: Any, stop: threading.Event) -> None:
    """Copy the lane's stats to the shared status until stop (a daemon thread of the lane)."""
    while not stop.wait(0.2):
        status[0] = stats.heartbeat
        status[1] = 1.0 if stats.broker_up else 0.0
        status[2] = 1.0 if stats.database_up else 0.0


def _lane_problem(process: BaseProcess, status: Any) -> str | None:
    """Why a lane is not ready, or None."""
    if not process.is_alive():
        return f"exited ({process.exitcode}); restarting"
    beat = status[0]
    if beat == 0.0:
        return "starting"
    if not status[2]:
        return "cannot store (database unavailable)"
    silent_s = time.monotonic() - beat
    if silent_s > STALLED_AFTER_S:
        return f"stalled: no progress for {silent_s:.0f}s"
    if not status[1]:
        return "not connected to the broker"
    return None


def _run_here(
    database_url: str,
    mqtt_url: str,
    settings: Settings,
    index: int,
    lane: Lane,
    status: Any = None,
) -> int:
    from ingest.models import IngestStats, Lane
    from ingest.worker import WorkerFailed, run_ingest, session_client_id, tune_gc

    tune_gc()  # this process only runs ingest
    if lane is Lane.TELEMETRY:
        # a saturated machine gives the urgent lane (alarms, entrapments) the CPU first
        os.nice(settings.ingest.telemetry_niceness)
    stop = _stop_on_signals()
    clock = make_clock(
        kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
    )
    name = f"ingest worker {index}" + (" urgent lane" if lane is Lane.URGENT else "")
    stats = IngestStats()
    if status is not None:
        threading.Thread(
            target=_report_status, args=(stats, status, stop), daemon=True, name="ingest-status"
        ).start()
    print(
        f"{name} starting ({session_client_id(settings.ingest.client_id, index, lane)})", flush=True
    )
    while True:
        try:
            stats = run_ingest(
                database_url=database_url,
                mqtt_url=mqtt_url,
                settings=settings,
                clock=clock,
                stop_event=stop,
                worker_index=index,
                lanes=(lane,),
                stats=stats,
            )
            break
        except WorkerFailed as exc:
            # nothing it held was acknowledged: the broker redelivers it to the new worker
            log.error("%s failed (%s); restarting it", name, exc)
            if stop.wait(1.0):
                return 1
    print(
        f"{name} stopped: {stats.points_stored} points, {stats.events_stored} events, "
        f"{stats.dead_letters} dead letters",
        flush=True,
    )
    return 0


def _worker_main(
    database_url: str,
    mqtt_url: str,
    settings_json: str,
    index: int,
    lane: str,
    supervisor: int,
    status: Any = None,
) -> None:
    from ingest.models import Lane
    from vigil.logs import log_context, setup_logging

    _die_with_parent(supervisor)
    settings = Settings.model_validate_json(settings_json)
    setup_logging(level=settings.log_level, format=settings.log_format)
    with log_context(worker=f"{index}-{lane}"):
        sys.exit(_run_here(database_url, mqtt_url, settings, index, Lane(lane), status))


def _die_with_parent(supervisor: int) -> None:
    """Linux: SIGKILL this lane when the supervisor dies, however it dies (a SIGKILLed
    supervisor must not leave lanes running that its restart would duplicate)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the supervisor's terminate() must do
        return
    if os.getppid() != supervisor:  # the supervisor died before prctl took effect
        os._exit(1)


def _supervise(
    database_url: str,
    mqtt_url: str,
    settings: Settings,
    workers: int,
    metrics_port: int | None = None,
) -> int:
    from ingest.models import Lane
    from vigil import metrics, ops

    stop = _stop_on_signals()
    context = multiprocessing.get_context("spawn")
    if metrics_port is not None:
        metrics.use_multiprocess_dir()  # before the lanes start: they inherit it
    settings_json = settings.model_dump_json()
    lanes = (Lane.TELEMETRY, Lane.URGENT)
    statuses = {
        (index, lane): context.Array("d", STATUS_FIELDS, lock=False)
        for index in range(workers)
        for lane in lanes
    }

    def spawn(index: int, lane: Lane) -> BaseProcess:
        """Start one lane of worker ``index`` in a process of its own (no GIL shared with the
        other lane: a telemetry backlog never slows the alarms down)."""
        status = statuses[index, lane]
        status[0] = 0.0  # starting
        process = context.Process(
            target=_worker_main,
            args=(
                database_url,
                mqtt_url,
                settings_json,
                index,
                str(lane),
                os.getpid(),
                status,
            ),
            name=f"vigil-ingest-{index}-{lane}",
        )
        process.start()
        return process

    running = {(index, lane): spawn(index, lane) for index in range(workers) for lane in lanes}
    server = None
    if metrics_port is not None:
        import psycopg

        health = ops.Health()
        health.add_check(
            "database",
            ops.database_check(lambda: psycopg.connect(database_url, connect_timeout=2)),
        )
        for key in running:
            health.add_check(
                f"worker {key[0]} {key[1]} lane",
                lambda key=key: _lane_problem(running[key], statuses[key]),
            )
        server = ops.OpsServer(health=health, host=settings.metrics_host, port=metrics_port)
        server.start()
        print(f"ingest metrics on http://{server.host}:{server.port}/metrics", flush=True)
    while not stop.wait(1.0):
        for (index, lane), process in list(running.items()):
            if not process.is_alive():
                log.warning(
                    "ingest worker %d (%s lane) exited (%s); restarting",
                    index,
                    lane,
                    process.exitcode,
                )
                if process.pid is not None:
                    metrics.worker_exited(process.pid)
                running[index, lane] = spawn(index, lane)
    if server is not None:
        server.close()
    for process in running.values():
        if process.pid is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in running.values():
        process.join(timeout=30)
    return 0
