"""bench/ingest: MQTT QoS 1 to committed rows, end to end, against a raw binary COPY of them.

``vigil bench ingest [--duration 60] [--workers 2] [--publishers 2] [--rate 150000] ...``

Self-contained: it starts a private PostgreSQL and a private Mosquitto, registers energy meters,
runs N ingest workers (separate processes, shared subscription) and P publisher processes that
publish batches of samples at QoS 1 for ``--duration`` seconds. It measures committed points/s
from the first publish to the last commit, then COPYs the very same points (pre-encoded, binary)
into a table of one row per point (Vigil's layout before migration 0105, the baseline) and prints
both rates and their ratio, the bytes per stored point of both layouts, and with
``--timescaledb`` the bytes per point once TimescaleDB has compressed the chunks. The values
carry meter-like noise, so compression is not flattered by smooth data.

The machine is shared and small (2 cores for broker, database, publishers and ingest): the
figures are noisy; run it more than once before drawing conclusions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

METRICS = (
    "voltage_l1",
    "voltage_l2",
    "voltage_l3",
    "current_l1",
    "current_l2",
    "current_l3",
    "power_total",
    "power_factor",
    "frequency",
    "import_energy",
)
TICK_MS = 100  # sample spacing per device


# -- deterministic data: publishers and the raw COPY generate the same rows ----------------------


def device_id(index: int) -> str:
    return f"bench-m{index:05d}"


def gateway_id(index: int) -> str:
    return f"bench-gw{index:02d}"


class Layout:
    """Which device each message is for, and its samples (no dataclass: runtime.bench loads this
    file without registering it in sys.modules, which dataclasses need)."""

    def __init__(self, devices: int, gateways: int, publishers: int, ticks: int, base_ms: int):
        self.devices = devices
        self.gateways = gateways
        self.publishers = publishers
        self.ticks = ticks  # timestamps per message; samples per message = ticks * len(METRICS)
        self.base_ms = base_ms

    def devices_of(self, publisher: int) -> list[int]:
        return [d for d in range(self.devices) if d % self.publishers == publisher]

    def message(self, mine: list[int], k: int) -> tuple[str, str, int, list[tuple]]:
        """The k-th message of a publisher owning ``mine``: gateway, device, seq, samples."""
        device = mine[k % len(mine)]
        round_ = k // len(mine)
        first = self.base_ms + round_ * self.ticks * TICK_MS
        base = 200.0 + (device % 50)
        tick0 = round_ * self.ticks
        samples = [
            (metric, first + t * TICK_MS, noisy(base + i * 10.0, device, tick0 + t, i))
            for t in range(self.ticks)
            for i, metric in enumerate(METRICS)
        ]
        return gateway_id(device % self.gateways), device_id(device), round_, samples


def noisy(level: float, device: int, tick: int, metric: int) -> float:
    """A reading around ``level`` with deterministic noise of ±5 at 0.01 resolution, as a
    meter's register would give (realistic for compression figures; smooth data flatters it)."""
    h = (device * 2_654_435_761 + tick * 40_503 + metric * 97) & 0xFFFF_FFFF
    h = (h ^ (h >> 15)) * 2_246_822_519 & 0xFFFF_FFFF
    return round(level + ((h >> 8) % 1001 - 500) / 100.0, 2)


def payload(seq: int, samples: list[tuple]) -> bytes:
    """The wire JSON of a telemetry batch, built directly (cheap: publishers share the CPU)."""
    body = {"v": 1, "seq": seq, "samples": [{"m": m, "t": t, "v": v} for m, t, v in samples]}
    return json.dumps(body, separators=(",", ":")).encode()


# -- roles run as subprocesses -------------------------------------------------------------------


def run_publisher(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from vigil import wire
    from vigil.broker import broker_address

    layout = Layout(args.devices, args.gateways, args.publishers, args.ticks, args.base_ms)
    where = broker_address(args.mqtt_url)
    host, port = where.host, where.port
    # NATS's MQTT listener speaks 3.1.1 only (as gateways configured for it do)
    protocol = mqtt.MQTTv311 if args.protocol == "3.1.1" else mqtt.MQTTv5
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{args.index}", protocol=protocol
    )
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(400)
    client.connect(host, port)
    client.loop_start()
    per_message = args.ticks * len(METRICS)
    mine = layout.devices_of(args.index)
    rate = args.rate / args.publishers / per_message if args.rate else 0.0  # messages/s

    def encoded(k: int) -> tuple[str, bytes]:
        gateway, device, seq, samples = layout.message(mine, k)
        return wire.topic(wire.Channel.TELEMETRY, gateway, device), payload(seq, samples)

    # Encode ahead what the run will need: gateways encode on their own machines, and this
    # benchmark measures the platform, not the publishers' JSON encoding.
    ready = [encoded(k) for k in range(int(rate * args.duration * 1.05) + 1)] if rate else []
    cpu_start = time.process_time()
    start = time.monotonic()
    print(f"start {start}", flush=True)
    k = 0
    infos = []
    while True:
        now = time.monotonic()
        if now - start >= args.duration:
            break
        if rate and k > (now - start) * rate:
            time.sleep(min(0.01, k / rate - (now - start)))
            continue
        topic, body = ready[k] if k < len(ready) else encoded(k)
        info = client.publish(topic, body, qos=1)
        while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # paho's own queue is full: wait for acks
            time.sleep(0.002)
            info = client.publish(topic, body, qos=1)
        infos.append(info)
        k += 1
        if len(infos) > 1000:
            infos = [i for i in infos if not i.is_published()]
    for info in infos:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()
    cpu = time.process_time() - cpu_start
    print(f"published {k} {k * per_message} {time.monotonic()} {cpu}", flush=True)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from ingest.models import IngestStats
    from ingest.worker import IngestWorker, tune_gc
    from vigil.clock import RealClock
    from vigil.config import IngestSettings

    tune_gc()
    stats = IngestStats()
    worker = IngestWorker(
        database_url=args.database_url,
        mqtt_url=args.mqtt_url,
        settings=IngestSettings(
            batch_size=args.batch_size,
            receive_maximum=args.receive_maximum,
            client_id="bench-ingest",
            workers=args.workers,  # more than one: a shared subscription (else each gets all)
            nats_replicas=args.nats_replicas,
        ),
        clock=RealClock(),
        worker_index=args.index,
        stats=stats,
    )
    worker.start()
    if not worker.wait_subscribed(30):
        print("error: not subscribed", flush=True)
        return 1
    print("subscribed", flush=True)
    last = [-1]
    try:
        while True:
            stats.wait_for(lambda s: s.points_stored != last[0], timeout=0.5)
            if stats.points_stored != last[0]:
                last[0] = stats.points_stored
                print(f"committed {last[0]} {time.monotonic()} {stats.dead_letters}", flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        worker.stop()
    return 0


# -- CPU accounting (Linux /proc): where the machine's time went ---------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()


def cpu_of(pid: int, *, with_children: bool = False) -> float:
    """CPU seconds used by a process (and its reaped children)."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL cluster: postmaster, exited backends and live backends
    (0 for a server that is not ours to measure)."""
    if not postmaster:
        return 0.0
    total = cpu_of(postmaster, with_children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == postmaster:
                total += cpu_of(int(entry.name))
    return total


def pid_running(needle: str) -> int | None:
    """PID of the process whose command line contains ``needle``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    return int(entry.name)
            except OSError:
                continue
    return None


# -- the benchmark -------------------------------------------------------------------------------


class Child:
    """A subprocess of this script whose stdout lines are parsed as they come."""

    def __init__(self, role: str, argv: list[str], on_line) -> None:
        self.process = subprocess.Popen(
            # -P: bench/ must not shadow the ``ingest`` package on sys.path
            [sys.executable, "-P", __file__, role, *argv],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(on_line,), daemon=True)
        self._thread.start()

    def _read(self, on_line) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            on_line(self, line.split())
        self.done.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def register(url: str, layout: Layout) -> None:
    from datetime import UTC, datetime

    import psycopg

    from fleet.factory import FleetFactory

    with psycopg.connect(url, autocommit=True) as conn:
        fleet = FleetFactory(conn, at=datetime.now(UTC))
        fleet.site(
            code="bench",
            user_unit=fleet.user_unit("bench"),
            jurisdiction=fleet.jurisdiction("b", name="B"),
            name="bench",
            latitude=31,
            longitude=121,
        )
        fleet.bulk(
            "gateways", ({"id": gateway_id(g), "site": "bench"} for g in range(layout.gateways))
        )
        fleet.bulk(
            "devices",
            (
                {
                    "id": device_id(d),
                    "kind": "energy_meter",
                    "model": "bench",
                    "site": "bench",
                    "gateway": gateway_id(d % layout.gateways),
                }
                for d in range(layout.devices)
            ),
        )


class PointRowEncoder:
    """The baseline layout, one row per point (device_id, metric, ts, value, good), in binary
    COPY format: Vigil's telemetry table before migration 0105, for the raw COPY comparison."""

    columns = "(device_id, metric, ts, value, good)"
    _tail = struct.Struct(">iqidi?")

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, str], bytes] = {}

    def encode(self, rows: list) -> bytes:
        from ingest.binary import HEADER, PG_EPOCH_MS, TRAILER

        parts = [HEADER]
        for device, samples in rows:
            for sample in samples:
                key = (device, sample.metric)
                prefix = self._prefixes.get(key)
                if prefix is None:
                    d, m = device.encode(), sample.metric.encode()
                    prefix = struct.pack(">hi", 5, len(d)) + d + struct.pack(">i", len(m)) + m
                    self._prefixes[key] = prefix
                parts.append(prefix)
                parts.append(
                    self._tail.pack(
                        8, (sample.ts - PG_EPOCH_MS) * 1000, 8, sample.value, 1, sample.good
                    )
                )
        parts.append(TRAILER)
        return b"".join(parts)


def raw_copy(
    url: str,
    layout: Layout,
    published: dict[int, int],
    batch_rows: int,
    postmaster: int,
    connections: int,
) -> tuple:
    """Rows/s of a binary COPY of the same points into a table of one row per point (the layout
    before migration 0105), and that table's bytes per point."""
    import psycopg

    from vigil.clock import from_ms
    from vigil.wire import Sample

    chunks: list[bytes] = []
    encoder = PointRowEncoder()
    pending: list = []
    size = rows = 0
    for publisher, messages in published.items():
        mine = layout.devices_of(publisher)
        for k in range(messages):
            _, device, _, samples = layout.message(mine, k)
            pending.append((device, [Sample(m, t, v) for m, t, v in samples]))
            size += len(samples)
            if size >= batch_rows:
                chunks.append(encoder.encode(pending))
                rows += size
                pending, size = [], 0
    if pending:
        chunks.append(encoder.encode(pending))
        rows += size
    first = from_ms(layout.base_ms).date()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_raw (device_id text NOT NULL, metric text NOT NULL, "
            "ts timestamptz NOT NULL, value double precision NOT NULL, "
            "good boolean NOT NULL DEFAULT true, PRIMARY KEY (device_id, metric, ts)) "
            "PARTITION BY RANGE (ts)"
        )
        conn.execute("CREATE INDEX ON bench_raw USING brin (ts)")
        for offset in range(-1, 3):
            day = first.toordinal() + offset
            lo = f"{first.fromordinal(day)}T00:00:00Z"
            hi = f"{first.fromordinal(day + 1)}T00:00:00Z"
            conn.execute(
                f"CREATE TABLE bench_raw_{offset + 1} PARTITION OF bench_raw "
                f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
            )
    conns = [psycopg.connect(url) for _ in range(connections)]
    try:

        def copy_share(index: int) -> None:
            conn = conns[index]
            for chunk in chunks[index::connections]:
                with conn.cursor().copy(
                    f"COPY bench_raw {encoder.columns} FROM STDIN (FORMAT BINARY)"
                ) as cp:
                    cp.write(chunk)
                conn.commit()

        threads = [threading.Thread(target=copy_share, args=(i,)) for i in range(connections)]
        cpu_before = cluster_cpu(postmaster)
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        cpu = cluster_cpu(postmaster) - cpu_before  # while the backends are alive to be counted
    finally:
        for conn in conns:
            conn.close()
    with psycopg.connect(url, autocommit=True) as conn:
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
            "WHERE inhparent = 'bench_raw'::regclass"
        ).fetchone()[0]
        conn.execute("DROP TABLE bench_raw")
    return rows, elapsed, cpu, int(size)


def storage_figures(url: str) -> tuple[int, int, int | None, str]:
    """Bytes and points of telemetry; on TimescaleDB also the bytes once every chunk is
    compressed."""
    import psycopg

    from ingest import service
    from vigil.db import has_timescaledb

    with psycopg.connect(url, autocommit=True) as conn:
        size, points = service.telemetry_storage(conn)
        parts = conn.execute(
            "SELECT sum(pg_relation_size(inhrelid)), sum(pg_indexes_size(inhrelid)) "
            "FROM pg_inherits WHERE inhparent = 'telemetry_rows'::regclass"
        ).fetchone()
        rows, live_bytes = conn.execute(
            "SELECT count(*), sum(pg_column_size(t.*)) FROM telemetry_rows t"
        ).fetchone()
        per_row = (live_bytes or 0) / max(rows, 1)
        detail = (
            f"{rows:,} rows of {points / max(rows, 1):.1f} points ({per_row:.0f} B each); "
            f"heap {(parts[0] or 0) / max(points, 1):.1f} B/point, "
            f"indexes {(parts[1] or 0) / max(points, 1):.1f} B/point"
        )
        compressed = None
        if has_timescaledb(conn):
            conn.execute("SELECT compress_chunk(c, true) FROM show_chunks('telemetry_rows') c")
            conn.execute("VACUUM ANALYZE telemetry_rows")
            compressed, _ = service.telemetry_storage(conn)
    return size, points, compressed, detail


def run_bench(args: argparse.Namespace) -> int:
    import psycopg
    from psycopg.conninfo import make_conninfo

    from vigil.clock import RealClock
    from vigil.db import migrate
    from vigil.services import MosquittoBroker, NatsCluster, PostgresServer

    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-ingest-"))
    scratch.chmod(0o755)
    # --database-url: a server of your own (a scratch database is created on it and dropped
    # after; its settings are left as they are); else a private one started here
    external = args.database_url
    postgres = (
        None
        if external
        else PostgresServer(scratch / "pg", durable=not args.no_fsync, timescaledb=args.timescaledb)
    )
    nats = args.broker == "nats"
    cluster = NatsCluster(scratch / "nats", size=3) if nats else None
    broker = None if nats else MosquittoBroker(scratch / "mqtt")
    children: list[Child] = []
    scratch_db = f"vigil_bench_{os.getpid()}"
    server_url = external or ""
    try:
        if postgres is not None:
            postgres.start()
            server_url = postgres.url()
        if cluster is not None:
            cluster.start()
            worker_url = cluster.url
            publisher_urls = [node.mqtt_url for node in cluster.nodes]  # spread over the nodes
        else:
            assert broker is not None
            broker.start()
            worker_url = broker.url
            publisher_urls = [broker.url]
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {scratch_db}")
        url = make_conninfo(server_url, dbname=scratch_db)
        migrate(url)
        if postgres is not None and not args.stock_postgres:
            # As a write-heavy server would be set up: fewer checkpoints (and full-page images)
            # during the run. Both paths (ingest and raw COPY) run under the same settings.
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
                conn.execute("ALTER SYSTEM SET checkpoint_timeout = '30min'")
                conn.execute("SELECT pg_reload_conf()")
        base_ms = RealClock().now_ms() - 3_600_000  # an hour back: far from the future limit
        layout = Layout(args.devices, args.gateways, args.publishers, args.ticks, base_ms)
        register(url, layout)
        per_message = args.ticks * len(METRICS)

        committed: dict[int, int] = {}
        last_commit = [0.0]
        lock = threading.Condition()

        def on_worker(child: Child, words: list[str]) -> None:
            if words[:1] == ["subscribed"]:
                child.ready.set()
            elif words[:1] == ["committed"]:
                with lock:
                    committed[id(child)] = int(words[1])
                    last_commit[0] = max(last_commit[0], float(words[2]))
                    lock.notify_all()

        common = ["--database-url", url, "--mqtt-url", worker_url, "--nats-replicas", "3"]
        for index in range(args.workers):
            children.append(
                Child(
                    "worker",
                    [
                        *common,
                        "--index",
                        str(index),
                        "--workers",
                        str(args.workers),
                        "--batch-size",
                        str(args.batch_size),
                        "--receive-maximum",
                        str(args.receive_maximum),
                    ],
                    on_worker,
                )
            )
        for child in children:
            if not child.ready.wait(60):
                print("an ingest worker did not subscribe", file=sys.stderr)
                return 1

        starts: list[float] = []
        published: dict[int, int] = {}
        published_points = [0]
        publisher_cpu = [0.0]
        brokers = (
            [pid for n in (cluster.nodes if cluster else []) if (pid := n.pid) is not None]
            if cluster is not None
            else [pid for pid in [pid_running(str(scratch / "mqtt" / "mosquitto.conf"))] if pid]
        )
        postmaster = (postgres.pid or 0) if postgres is not None else 0
        cpu_before = {
            "database": cluster_cpu(postmaster),
            "broker": sum(cpu_of(pid) for pid in brokers),
            "ingest": sum(cpu_of(c.process.pid) for c in children),
        }

        def on_publisher(child: Child, words: list[str]) -> None:
            if words[:1] == ["start"]:
                starts.append(float(words[1]))
            elif words[:1] == ["published"]:
                with lock:
                    published[child.index] = int(words[1])  # type: ignore[attr-defined]
                    published_points[0] += int(words[2])
                    publisher_cpu[0] += float(words[4])
                    lock.notify_all()

        print(
            f"publishing for {args.duration:.0f} s: {args.publishers} publishers, "
            f"{per_message} points per message, target {args.rate or 'unlimited'} points/s, "
            f"{args.workers} ingest workers, batch {args.batch_size}",
            flush=True,
        )
        publishers = []
        for index in range(args.publishers):
            child = Child(
                "publisher",
                [
                    "--mqtt-url",
                    publisher_urls[index % len(publisher_urls)],
                    "--protocol",
                    "3.1.1" if nats else "5",
                    "--index",
                    str(index),
                    "--publishers",
                    str(args.publishers),
                    "--devices",
                    str(args.devices),
                    "--gateways",
                    str(args.gateways),
                    "--ticks",
                    str(args.ticks),
                    "--base-ms",
                    str(base_ms),
                    "--duration",
                    str(args.duration),
                    "--rate",
                    str(args.rate),
                ],
                on_publisher,
            )
            child.index = index  # type: ignore[attr-defined]
            publishers.append(child)
        children.extend(publishers)

        def total() -> int:
            return sum(committed.values())

        next_report = time.monotonic() + 10
        in_window: int | None = None  # committed when the publishing window closed
        with lock:
            while len(published) < args.publishers or total() < published_points[0]:
                lock.wait(0.2)
                if (
                    in_window is None
                    and len(starts) == args.publishers
                    and time.monotonic() >= min(starts) + args.duration
                ):
                    in_window = total()
                if time.monotonic() >= next_report:
                    print(f"  ... {total():,} points committed", flush=True)
                    next_report += 10
                if all(p.done.is_set() for p in publishers) and len(published) < args.publishers:
                    print("a publisher failed", file=sys.stderr)
                    return 1
        start = min(starts)
        elapsed = last_commit[0] - start
        points = total()
        e2e = points / elapsed
        cpu = {
            "ingest": sum(cpu_of(c.process.pid) for c in children[: args.workers])
            - cpu_before["ingest"],
            "database": cluster_cpu(postmaster) - cpu_before["database"],
            "broker": sum(cpu_of(pid) for pid in brokers) - cpu_before["broker"],
            "publishers": publisher_cpu[0],
        }

        rows, copy_s, copy_db_cpu, copy_size = raw_copy(
            url, layout, published, args.batch_size, postmaster, args.copy_connections
        )
        copy_rate = rows / copy_s
        size, stored, compressed, layout_detail = storage_figures(url)
        print()
        print(f"points published:          {published_points[0]:,}")
        print(f"points committed:          {points:,} (rows in telemetry: {stored:,})")
        offered = published_points[0] / args.duration
        window = (in_window if in_window is not None else points) / args.duration
        print(f"offered by publishers:     {offered:,.0f} points/s for {args.duration:.0f} s")
        print(f"committed in that window:  {window:,.0f} points/s")
        path = "NATS JetStream, 3 nodes" if nats else "Mosquitto"
        print(f"end to end (MQTT→commit):  {e2e:,.0f} points/s over {elapsed:.1f} s ({path})")
        RESULTS.append({"broker": path, "workers": args.workers, "e2e": e2e, "copy": rows / copy_s})
        print(
            f"raw binary COPY, one row per point (the layout before 0105): {copy_rate:,.0f} "
            f"points/s ({rows:,} rows, {copy_s:.1f} s, {args.copy_connections} connection(s), "
            f"chunks of {args.batch_size:,})"
        )
        print(f"ratio end-to-end / that COPY: {e2e / copy_rate:.2f}")
        print(
            f"bytes per stored point:    {size / max(stored, 1):.1f} ({size / 2**20:.0f} MiB); "
            f"one row per point: {copy_size / max(rows, 1):.1f}"
        )
        print(f"  {layout_detail}")
        if compressed is None:
            print("TimescaleDB compression:   n/a (plain PostgreSQL; --timescaledb to measure)")
        else:
            print(
                f"TimescaleDB compressed:    {compressed / max(stored, 1):.2f} bytes per point "
                f"({size / max(compressed, 1):.1f}x smaller)"
            )
        tuning = (
            "your server's settings"
            if postgres is None
            else "stock"
            if args.stock_postgres
            else "max_wal_size=8GB, checkpoint_timeout=30min"
        )
        fsync = "" if postgres is None else f"fsync {'off' if args.no_fsync else 'on'}, "
        print(f"PostgreSQL:                {fsync}{tuning}")
        print("CPU during the end-to-end run (seconds, and µs per point):")
        for name, seconds in cpu.items():
            print(f"  {name:<12} {seconds:7.1f} s  {seconds / max(points, 1) * 1e6:6.2f} µs/point")
        print(
            f"  raw COPY: database {copy_db_cpu:.1f} s, "
            f"{copy_db_cpu / max(rows, 1) * 1e6:.2f} µs/row"
        )
        print(
            f"  (machine: {os.cpu_count()} cores x {elapsed:.1f} s = "
            f"{(os.cpu_count() or 1) * elapsed:.0f} core-seconds; the rest went to other work)"
        )
        return 0 if stored == published_points[0] else 1
    finally:
        for child in children:
            child.stop()
        if broker is not None:
            broker.kill()
        if cluster is not None:
            for node in cluster.nodes:
                node.kill()
        if postgres is not None:
            postgres.stop(mode="immediate")
        elif server_url:
            with contextlib.suppress(Exception), psycopg.connect(server_url, autocommit=True) as c:
                c.execute(f"DROP DATABASE IF EXISTS {scratch_db} WITH (FORCE)")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vigil bench ingest", description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument("--workers", type=int, default=2, help="ingest worker processes")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--rate", type=int, default=150_000, help="points/s to offer (0: max)")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=50, help="timestamps per message")
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument(
        "--copy-connections", type=int, default=1, help="connections of the raw COPY baseline"
    )
    parser.add_argument("--no-fsync", action="store_true", help="run PostgreSQL without fsync")
    parser.add_argument(
        "--timescaledb",
        action="store_true",
        help="the private server loads TimescaleDB (hypertable path, compression figures)",
    )
    parser.add_argument(
        "--database-url",
        help="benchmark on this PostgreSQL server (a scratch database is created and dropped) "
        "instead of a private one started here",
    )
    parser.add_argument(
        "--stock-postgres", action="store_true", help="keep max_wal_size/checkpoint defaults"
    )
    parser.add_argument(
        "--broker",
        choices=("mosquitto", "nats"),
        default="mosquitto",
        help="nats: a private 3-node NATS cluster, publishers on MQTT 3.1.1, workers on JetStream",
    )
    parser.add_argument(
        "--sweep",
        default="",
        metavar="N,N,...",
        help="run once per worker count on the chosen broker, then once on Mosquitto with the "
        "first count, and print the figures side by side (e.g. --broker nats --sweep 1,2,4)",
    )
    pub = roles.add_parser("publisher")
    wrk = roles.add_parser("worker")
    for role in (pub, wrk):
        role.add_argument("--mqtt-url", required=True)
        role.add_argument("--index", type=int, required=True)
    pub.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    wrk.add_argument("--nats-replicas", type=int, default=3)
    wrk.add_argument("--database-url", required=True)
    wrk.add_argument("--workers", type=int, required=True)
    wrk.add_argument("--batch-size", type=int, required=True)
    wrk.add_argument("--receive-maximum", type=int, required=True)
    for name, kind in (
        ("--publishers", int),
        ("--devices", int),
        ("--gateways", int),
        ("--ticks", int),
        ("--base-ms", int),
        ("--duration", float),
        ("--rate", int),
    ):
        pub.add_argument(name, type=kind, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    if args.role == "publisher":
        return run_publisher(args)
    if args.role == "worker":
        return run_worker(args)
    if args.sweep:
        return run_sweep(args)
    return run_bench(args)


RESULTS: list[dict] = []  # what each run of this process measured, for the sweep's summary


def run_sweep(args: argparse.Namespace) -> int:
    """The chosen broker with each worker count, then Mosquitto, each with its COPY baseline
    (measured in the same run, on the same machine), side by side."""
    counts = [int(n) for n in args.sweep.split(",") if n]
    runs = [(args.broker, n) for n in counts]
    if args.broker != "mosquitto":
        runs.append(("mosquitto", counts[0]))
    status = 0
    for broker, workers in runs:
        print(f"\n=== {broker}, {workers} worker(s) ===", flush=True)
        one = argparse.Namespace(**{**vars(args), "broker": broker, "workers": workers})
        status |= run_bench(one)
    print("\nbroker                    workers  end to end points/s   raw COPY points/s  ratio")
    for r in RESULTS:
        print(
            f"{r['broker']:<25} {r['workers']:>7}  {r['e2e']:>19,.0f}  {r['copy']:>18,.0f}"
            f"  {r['e2e'] / r['copy']:.2f}"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
