"""bench/rescue_latency: entrapment seen at the edge → technician notified by webhook.

``vigil bench rescue_latency [--via gateway|mqtt] [--samples 60] [--load 20000] [--lifts 20]``

Self-contained: a private PostgreSQL and Mosquitto; an ingest worker, the rescue runner
(``compliance.rescue.scheduled.run``, which also runs the alerts delivery worker) and, with
``--via gateway`` (the default), a real gateway process, each a separate process; simulated
lift controllers (Modbus TCP servers) and a webhook receiver (a real HTTP server) in this one.

For each sample a lift gets trapped between floors with passengers and the alarm button pressed
(rule R1: the alarm button has no dwell). ``--via gateway`` injects that into the simulated
controller's registers and the gateway's next 1 Hz poll picks it up; ``--via mqtt`` publishes
the event batch the gateway would publish. It times:

* poll → webhook: from the poll that saw it (the event's device timestamp; with ``--via mqtt``
  the publish) to the technician's dispatch webhook, and to the firm's entrapment-alarm webhook;
* poll → notice: gateway, broker and ingest (the event committed and announced);
* notice → webhook: from the ``vigil_events`` notice (seen by a listener here) to the dispatch
  webhook: detection, dispatch and delivery alone.

It runs the samples idle, then under a background load of ``--load`` points/s of energy-meter
telemetry published at QoS 1 through the same broker and ingest, then with that telemetry
published as fast as the publisher can (ingest's telemetry lane at 100 % of its capacity, a
backlog growing at the broker; ``--no-saturate`` skips it). Each loaded phase also reports the
points/s published and committed. The goal is p99 < 500 ms beyond the detection dwell time.

The machine is small and shared (2 cores for everything above, and other engineers' work): the
figures are noisy; run it more than once before drawing conclusions.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOAD_METRICS = ("voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "power_total")
LIFT_STATE = {"service_mode": 1, "car_status": 0, "door_zone": 1, "door_state": 2}


def lift_id(index: int) -> str:
    return f"bench-lift{index:03d}"


def meter_id(index: int) -> str:
    return f"bench-meter{index:04d}"


# -- roles run as subprocesses -------------------------------------------------------------------


def run_ingest(args: argparse.Namespace) -> int:
    from ingest.models import IngestStats, Lane
    from ingest.worker import IngestWorker
    from vigil.clock import RealClock
    from vigil.config import IngestSettings

    settings = IngestSettings(
        client_id="bench-rescue-ingest",
        **({"batch_size": args.ingest_batch_size} if args.ingest_batch_size else {}),
    )
    import os

    # as `vigil ingest` runs it: this process runs one lane (telemetry, niced; or urgent)
    lane_of_this_process = Lane(args.lane)
    if lane_of_this_process is Lane.TELEMETRY:
        os.nice(settings.telemetry_niceness)
    lanes = [
        IngestWorker(
            database_url=args.database_url,
            mqtt_url=args.mqtt_url,
            settings=settings,
            clock=RealClock(),
            worker_index=0,
            stats=IngestStats(),
            lane=lane,
            maintenance=lane is Lane.TELEMETRY,
        )
        for lane in (lane_of_this_process,)
    ]
    for worker in lanes:
        worker.start()
    if not all(worker.wait_subscribed(30) for worker in lanes):
        print("error: not subscribed", flush=True)
        return 1
    print("ready", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    for worker in lanes:
        worker.stop()
    return 0


def run_rescue(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from compliance.rescue import scheduled
    from vigil.clock import RealClock
    from vigil.config import Settings
    from vigil.resources import open_resources

    logging.basicConfig(level=logging.ERROR)
    base = Settings()
    settings = base.model_copy(
        update={"alerts": base.alerts.model_copy(update={"webhook_secret": "bench"})}
    )

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with open_resources(
            database_url=args.database_url,
            mqtt_url=args.mqtt_url,
            clock=RealClock(),
            settings=settings,
        ) as resources:  # as `vigil compliance` builds them
            task = asyncio.create_task(scheduled.run(resources=resources, stop=stop))
            await asyncio.sleep(2)  # let it LISTEN and scan before samples start
            print("ready", flush=True)
            await task

    asyncio.run(main())
    return 0


def run_load(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from vigil import wire
    from vigil.broker import broker_address

    where = broker_address(args.mqtt_url)
    host, port = where.host, where.port
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bench-load", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(400)
    client.connect(host, int(port))
    client.loop_start()
    ticks = 10
    per_message = ticks * len(LOAD_METRICS)
    rate = args.load / per_message if args.load > 0 else 0.0  # messages/s; 0: as fast as it can
    print("ready", flush=True)
    start = time.monotonic()
    base_ms = int(time.time() * 1000) - 600_000
    k = 0
    while True:
        elapsed = time.monotonic() - start
        if rate and k > elapsed * rate:
            time.sleep(min(0.01, k / rate - elapsed))
            continue
        meter = k % args.meters
        round_ = k // args.meters
        first = base_ms + round_ * ticks * 100
        samples = [
            {"m": m, "t": first + t * 100, "v": 220.0 + t + i}
            for t in range(ticks)
            for i, m in enumerate(LOAD_METRICS)
        ]
        body = json.dumps({"v": 1, "seq": round_, "samples": samples}, separators=(",", ":"))
        topic = wire.topic(wire.Channel.TELEMETRY, "bench-gw", meter_id(meter))
        info = client.publish(topic, body.encode(), qos=1)
        while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.002)
            info = client.publish(topic, body.encode(), qos=1)
        k += 1
        if k % 200 == 0:
            print(f"published {k * per_message} {time.monotonic() - start:.3f}", flush=True)


# -- the benchmark -------------------------------------------------------------------------------


class Child:
    """A subprocess of this script; ``ready`` is set when it prints 'ready'."""

    def __init__(self, role: str, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-P", __file__, "--role", role, *argv],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.last: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            words = line.split()
            if words[:1] == ["ready"]:
                self.ready.set()
            self.last = words

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Receiver:
    """Webhook receiver: records each delivery's path, incident and arrival time."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[tuple[int, float]]] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                incident = body.get("incident_id") or body.get("details", {}).get("incident_id")
                with receiver.cond:
                    receiver.arrivals.setdefault(self.path, []).append((int(incident or 0), at))
                    receiver.cond.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, path: str, count: int, timeout: float = 30.0) -> tuple[int, float]:
        """The ``count``-th delivery to ``path`` (1-based): incident id and arrival time."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.arrivals.get(path, [])) >= count, timeout):
                raise TimeoutError(f"webhook {path}: {len(self.arrivals.get(path, []))} of {count}")
            return self.arrivals[path][count - 1]


def seed(conn, *, lifts: list[str], meters: int, hook: str) -> int:
    """Site, firm, one on-call technician per lift, lifts and meters on one gateway."""
    from datetime import UTC, date, datetime, timedelta

    from alerts import service as alerts
    from fleet.factory import FleetFactory

    now = datetime.now(UTC)
    fleet = FleetFactory(conn, at=now)
    site = fleet.site(
        code="bench-tower",
        user_unit=fleet.user_unit("Bench"),
        jurisdiction=fleet.jurisdiction("bench", name="Bench"),
        name="Bench Tower",
        latitude=31.23,
        longitude=121.47,
    )
    firm = fleet.firm("Bench Lifts", licence_no="B-1", licence_expires_on=date(2099, 1, 1))
    fleet.gateway("bench-gw", site=site)
    roster = alerts.create_roster(conn, firm_id=firm, name="bench")
    fleet.bulk(
        "devices",
        (
            {
                "id": lift,
                "kind": "elevator",
                "model": "traction",
                "site": "bench-tower",
                "gateway": "bench-gw",
            }
            for lift in lifts
        ),
    )
    fleet.bulk(
        "contracts",
        (
            {
                "device": lift,
                "firm": "Bench Lifts",
                "starts_on": now.date() - timedelta(days=1),
                "ends_on": date(2099, 1, 1),
            }
            for lift in lifts
        ),
    )
    fleet.bulk(
        "devices",
        (
            {
                "id": meter_id(i),
                "kind": "energy_meter",
                "model": "sdm630",
                "site": "bench-tower",
                "gateway": "bench-gw",
            }
            for i in range(meters)
        ),
    )
    technician = fleet.technician(
        firm=firm,
        name="tech",
        certificate_no="C-1",
        certificate_expires_on=date(2099, 1, 1),
        home_latitude=31.24,
        home_longitude=121.47,
    )
    alerts.add_shift(
        conn,
        roster_id=roster,
        technician_id=technician,
        start=now - timedelta(days=1),
        end=now + timedelta(days=2),
    )
    alerts.add_contact(
        conn,
        party_type="technician",
        party_id=technician,
        audience="technician",
        channel="webhook",
        address=f"{hook}/technician",
    )
    alerts.add_contact(
        conn,
        party_type="firm",
        party_id=firm,
        audience="firm",
        channel="webhook",
        address=f"{hook}/firm",
    )
    return technician


def publish_events(client, lift: str, seq: int, ts: int, changes: dict[str, float]) -> None:
    from vigil import wire

    events = [{"m": m, "t": ts, "v": v} for m, v in changes.items()]
    body = json.dumps({"v": 1, "seq": seq, "events": events}, separators=(",", ":"))
    client.publish(wire.topic(wire.Channel.EVENTS, "bench-gw", lift), body.encode(), qos=1)


def stored_points(conn) -> int:
    """Telemetry points committed so far."""
    row = conn.execute('SELECT coalesce(sum(cardinality("values")), 0) FROM telemetry_rows')
    return int(row.fetchone()[0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class MqttPath:
    """Entrapments published as the gateway would, right after the poll that saw them."""

    name = "published as the gateway would"

    def __init__(self, client) -> None:
        self.client = client
        self.seq = 0

    def lifts(self, count: int) -> list[str]:
        return [lift_id(i) for i in range(count)]

    def _publish(self, lift: str, changes: dict[str, float]) -> float:
        self.seq += 1
        sent = time.time()
        publish_events(self.client, lift, self.seq, int(sent * 1000), changes)
        return sent

    def start(self, lift: str) -> float | None:
        return self._publish(
            lift,
            {"door_zone": 0, "door_state": 0, "passengers": 1, "car_status": 0, "alarm_button": 1},
        )

    def reset(self, lift: str) -> None:
        self._publish(lift, {"alarm_button": 0, "door_zone": 1, "door_state": 2, "passengers": 0})


class GatewayPath:
    """Entrapments injected into simulated controllers that a real gateway process polls."""

    name = "simulated controller polled by the gateway"

    def __init__(self, runner, lifts: list[str]) -> None:
        self.runner = runner
        self._lifts = lifts

    def lifts(self, count: int) -> list[str]:
        return self._lifts[:count]

    def start(self, lift: str) -> float | None:
        from simulators.models import Fault

        self.runner.inject(lift, Fault.ENTRAPMENT_BETWEEN_FLOORS)
        self.runner.inject(lift, Fault.ALARM_BUTTON)
        return None  # the clock starts at the poll that sees it (the event's timestamp)

    def reset(self, lift: str) -> None:
        from simulators.models import Fault

        self.runner.clear(lift, Fault.ALARM_BUTTON)
        self.runner.clear(lift, Fault.ENTRAPMENT_BETWEEN_FLOORS)


def run_phase(*, name: str, args, conn, path, receiver, watch, counters: dict) -> dict:
    """Inject ``--samples`` entrapments one after another; returns the latencies (ms)."""
    from compliance.rescue import flows
    from compliance.rescue.models import StillTrapped
    from vigil.clock import RealClock

    clock = RealClock()
    lifts = path.lifts(args.lifts)
    to_technician, to_firm, detection, to_notice = [], [], [], []
    event_ids: list[int] = []
    origins: list[float] = []
    notices: list[float] = []
    for k in range(args.samples):
        lift = lifts[k % len(lifts)]
        sent = path.start(lift)
        counters[lift] = counters.get(lift, 0) + 1
        noticed, polled_ms, event_id = watch.wait(lift, counters[lift])
        origin = sent if sent is not None else polled_ms / 1000
        event_ids.append(event_id)
        origins.append(origin)
        notices.append(noticed)
        counters["technician"] += 1
        incident, technician_at = receiver.wait("/technician", counters["technician"])
        counters["firm"] += 1
        firm_incident, firm_at = receiver.wait("/firm", counters["firm"])
        assert firm_incident == incident, (firm_incident, incident)
        to_technician.append((technician_at - origin) * 1000)
        to_firm.append((firm_at - origin) * 1000)
        detection.append((technician_at - noticed) * 1000)
        to_notice.append((noticed - origin) * 1000)
        # put the lift back, then close the incident for the next round (rule R6: not while
        # the controller still reports people trapped, so its freed state must land first)
        path.reset(lift)
        counters[lift] += 1
        watch.wait(lift, counters[lift])
        for _ in range(100):
            try:
                flows.close_false_alarm(
                    conn,
                    incident_id=incident,
                    at=clock.now(),
                    actor="bench",
                    reason="benchmark sample",
                )
                break
            except StillTrapped:
                time.sleep(0.05)  # the freed car's other metrics are a poll behind
        time.sleep(args.gap_ms / 1000)
    result: dict = {"phase": name, "path": path.name, "samples": args.samples}
    # received_at is when ingest's collector took the message off the wire: the rest of
    # poll -> notice is ingest's writer and the commit
    received = dict(
        conn.execute(
            "SELECT id, extract(epoch FROM received_at) FROM events WHERE id = ANY(%s)",
            (event_ids,),
        ).fetchall()
    )
    to_received = [(float(received[e]) - o) * 1000 for e, o in zip(event_ids, origins, strict=True)]
    in_ingest = [(n - float(received[e])) * 1000 for e, n in zip(event_ids, notices, strict=True)]
    for label, values in (
        ("poll_to_ingest_received_ms", to_received),
        ("ingest_received_to_notice_ms", in_ingest),
        ("poll_to_technician_ms", to_technician),
        ("poll_to_firm_ms", to_firm),
        ("poll_to_committed_notice_ms", to_notice),
        ("notice_to_technician_ms", detection),
    ):
        result[label] = {
            "p50": round(statistics.median(values), 1),
            "p99": round(percentile(values, 0.99), 1),
            "max": round(max(values), 1),
        }
    return result


class EventWatch:
    """LISTEN on vigil_events in a thread; records when each lift's alarm-button event landed."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("LISTEN vigil_events")
        self.seen: dict[str, list[tuple[float, int, int]]] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import psycopg

        try:
            self._listen()
        except psycopg.OperationalError:
            pass  # the database stopped at the end of the run

    def _listen(self) -> None:
        for note in self.conn.notifies():
            body = json.loads(note.payload)
            if body["metric"] == "alarm_button":
                with self.cond:
                    self.seen.setdefault(body["device"], []).append(
                        (time.time(), body["ts"], body["id"])
                    )
                    self.cond.notify_all()

    def wait(self, lift: str, count: int, timeout: float = 30.0) -> tuple[float, int, int]:
        """The ``count``-th alarm-button notice of ``lift`` (1-based): when it arrived (wall
        time, s), the event's device timestamp (ms: the gateway's poll) and its id."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.seen.get(lift, [])) >= count, timeout):
                raise TimeoutError(f"no event notice for {lift}")
            return self.seen[lift][count - 1]


def gateway_toml(path: Path, *, mqtt_url: str, placements, data_dir: Path) -> None:
    """A gateway config polling every simulated lift once a second."""
    lines = [
        'gateway_id = "bench-gw"',
        f'data_dir = "{data_dir}"',
        "health_interval_s = 3600",
        "[broker]",
        f'url = "{mqtt_url}"',
        "[polling]",
        "poll_s = 1.0",
        "timeout_s = 1.0",
    ]
    for p in placements:
        lines += [
            "[[devices]]",
            f'id = "{p.device_id}"',
            f'profile = "{p.model}"',
            f'host = "{p.host}"',
            f"port = {p.port}",
            f"unit = {p.unit}",
            "report_interval_s = 60",
        ]
    path.write_text("\n".join(lines) + "\n")


def run_gateway_role(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.service import run_gateway
    from vigil.clock import RealClock

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await run_gateway(config=Path(args.gateway_config), clock=RealClock(), stop=stop)

    asyncio.run(main())
    return 0


def run_bench(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt
    import psycopg

    from vigil.broker import broker_address
    from vigil.clock import RealClock
    from vigil.db import migrate
    from vigil.services import MosquittoBroker, PostgresServer

    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-rescue-"))
    scratch.chmod(0o755)  # PostgreSQL runs as another user when we are root
    postgres = PostgresServer(scratch / "pg", durable=False)
    broker = MosquittoBroker(scratch / "mqtt")
    children: list[Child] = []
    receiver = Receiver()
    fleet = None
    try:
        postgres.start()
        broker.start()
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE vigil")
        url = postgres.url("vigil")
        migrate(url)
        conn = psycopg.connect(url, autocommit=True)
        if args.via == "gateway":
            from simulators.server import build_devices
            from simulators.testing import FleetRunner

            fleet = FleetRunner(
                build_devices(clock=RealClock(), elevators=args.lifts, prefix="bench-")
            ).start()
            placements = fleet.placements()
            lifts = [p.device_id for p in placements]
        else:
            lifts = [lift_id(i) for i in range(args.lifts)]
        seed(conn, lifts=lifts, meters=args.meters, hook=receiver.url)
        common = ["--database-url", url, "--mqtt-url", broker.url]
        ingest_args = ["--ingest-batch-size", str(args.ingest_batch_size)]
        for lane in ("telemetry", "urgent"):  # each lane a process, as `vigil ingest` runs them
            children.append(Child("ingest", [*common, *ingest_args, "--lane", lane]))
        children.append(Child("rescue", common))
        for child in children:
            if not child.ready.wait(60):
                print("a child process did not start", file=sys.stderr)
                return 1
        watch = EventWatch(url)
        counters = {"technician": 0, "firm": 0}
        client = None
        if args.via == "gateway":
            config = scratch / "gateway.toml"
            gateway_toml(
                config, mqtt_url=broker.url, placements=placements, data_dir=scratch / "gw"
            )
            children.append(Child("gateway", [*common, "--gateway-config", str(config)]))
            path = GatewayPath(fleet, lifts)
        else:
            where = broker_address(broker.url)
            host, port = where.host, where.port
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gateway", protocol=mqtt.MQTTv5
            )
            client.connect(host, int(port))
            client.loop_start()
            path = MqttPath(client)
            for lift in lifts:
                path.seq += 1
                publish_events(
                    client,
                    lift,
                    path.seq,
                    int(time.time() * 1000) - 5000,
                    {**LIFT_STATE, "passengers": 0, "alarm_button": 0},
                )
        # every lift's first alarm-button state has landed (the gateway's first poll reports it)
        for lift in lifts:
            counters[lift] = 1
            watch.wait(lift, 1, timeout=60)
        phases = [("idle", 0)] + ([(f"load {args.load} points/s", args.load)] if args.load else [])
        if args.saturate:
            # the load publisher as fast as it can: the telemetry lane runs at 100 % of its
            # capacity with a growing backlog at the broker (ingest issue 21, item 9)
            phases.append(("ingest at capacity", -1))
        results = []
        for name, load_rate in phases:
            load = None
            if load_rate:
                load = Child(
                    "load", [*common, "--load", str(load_rate), "--meters", str(args.meters)]
                )
                children.append(load)
                load.ready.wait(30)
                time.sleep(args.warmup)
                published_before = int(load.last[1]) if load.last[:1] == ["published"] else 0
                stored_before = stored_points(conn)
            began = time.monotonic()
            result = run_phase(
                name=name,
                args=args,
                conn=conn,
                path=path,
                receiver=receiver,
                watch=watch,
                counters=counters,
            )
            if load is not None:
                elapsed = time.monotonic() - began
                published_after = int(load.last[1]) if load.last[:1] == ["published"] else 0
                result["load_published_points_per_s"] = round(
                    (published_after - published_before) / elapsed
                )
                result["telemetry_stored_points_per_s"] = round(
                    (stored_points(conn) - stored_before) / elapsed
                )
                load.stop()
            results.append(result)
        stored = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]
        if client is not None:
            client.loop_stop()
            client.disconnect()
        for result in results:
            print(json.dumps(result))
        print(f"telemetry rows stored during the run: {stored}")
        print(
            "note: 2 shared cores run broker, database, ingest, rescue, gateway, simulators, the "
            "load publisher and this process; figures are noisy. Goal: p99 < 500 ms beyond the "
            "dwell (the alarm button has none)."
        )
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        if fleet is not None:
            fleet.stop()
        broker.stop()
        postgres.stop(mode="immediate")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vigil bench rescue_latency")
    parser.add_argument(
        "--role", choices=["bench", "ingest", "rescue", "load", "gateway"], default="bench"
    )
    parser.add_argument(
        "--via",
        choices=["gateway", "mqtt"],
        default="gateway",
        help="gateway: simulated controllers polled by a gateway; mqtt: events published directly",
    )
    parser.add_argument("--gateway-config")
    parser.add_argument("--lane", choices=["telemetry", "urgent"], default="telemetry")
    parser.add_argument(
        "--ingest-batch-size", type=int, default=0, help="ingest batch size (0: its default)"
    )
    parser.add_argument("--samples", type=int, default=60, help="entrapments per phase")
    parser.add_argument("--lifts", type=int, default=20)
    parser.add_argument("--load", type=int, default=20_000, help="background points/s (0: none)")
    parser.add_argument("--meters", type=int, default=400)
    parser.add_argument(
        "--no-saturate",
        dest="saturate",
        action="store_false",
        help="skip the phase with telemetry published as fast as possible (ingest at capacity)",
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before sampling")
    parser.add_argument("--gap-ms", type=float, default=100.0, help="pause between samples")
    parser.add_argument("--database-url")
    parser.add_argument("--mqtt-url")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.role == "ingest":
        return run_ingest(args)
    if args.role == "rescue":
        return run_rescue(args)
    if args.role == "load":
        return run_load(args)
    if args.role == "gateway":
        return run_gateway_role(args)
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
