"""`vigil ingest --workers N` and the embeddable `run_ingest` entry point."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading

from ingest.worker import run_ingest
from tests.ingest.conftest import (
    Publisher,
    count,
    ingest_settings,
    register_fleet,
    start_ingest,
    telemetry,
    wait_for_count,
)
from vigil.clock import RealClock


def test_cli_runs_n_workers_that_split_the_load_and_stop_cleanly(db_url, broker, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id, meters=4)
    process = start_ingest(db_url, broker.url, "--workers", "2")
    subscribed = threading.Semaphore(0)
    errors: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            errors.append(line)
            if "subscribed to" in line:
                subscribed.release()

    threading.Thread(target=drain, daemon=True).start()
    try:
        for _ in range(4):  # two workers, each with a telemetry and an urgent lane
            assert subscribed.acquire(timeout=60), "".join(errors[-20:])
        now = RealClock().now_ms()
        pub = Publisher(broker.url)
        for i in range(40):
            pub.publish(*telemetry(fleet, device=fleet.meters[i % 4], seq=i, start_ms=now - i * 50))
        pub.close()
        assert wait_for_count(db_url, "SELECT count(*) FROM telemetry", 400) == 400
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    stored = [int(n) for n in re.findall(r"ingest worker \d stopped: (\d+) points", out)]
    assert len(stored) == 2, out
    assert sum(stored) == 400 and min(stored) > 0, stored
    assert count(db_url, "SELECT count(*) FROM telemetry") == 400


def test_run_ingest_is_embeddable(db_url, broker, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    stop = threading.Event()
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_ingest(
                database_url=db_url,
                mqtt_url=broker.url,
                settings=ingest_settings(client_id=f"embedded-{unique_id}"),
                clock=clock,
                stop_event=stop,
            )
        )
    )
    thread.start()
    try:
        pub = Publisher(broker.url)
        # the worker may still be subscribing: publish until the first message lands
        for seq in range(1, 200):
            pub.publish(
                *telemetry(
                    fleet, device=fleet.meters[0], seq=seq, start_ms=clock.now_ms() - seq * 10
                )
            )
            if wait_for_count(db_url, "SELECT count(*) FROM telemetry", 1, timeout=0.2) >= 1:
                break
        pub.close()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    stats = result[0]
    assert stats.points_stored == count(db_url, "SELECT count(*) FROM telemetry") > 0
    assert stats.dead_letters == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def test_each_lane_is_a_process_that_dies_with_a_killed_supervisor(db_url, broker):
    env = {**os.environ, "VIGIL_DATABASE_URL": db_url, "VIGIL_MQTT_URL": broker.url}
    env.pop("VIGIL_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    subscribed = threading.Semaphore(0)

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if "subscribed to" in line:
                subscribed.release()

    threading.Thread(target=drain, daemon=True).start()
    try:
        for _ in range(2):  # the telemetry lane and the urgent lane
            assert subscribed.acquire(timeout=60)
        lanes = [
            pid
            for pid in _children(process.pid)
            if "spawn_main" in open(f"/proc/{pid}/cmdline").read()
        ]
        assert len(lanes) == 2
        # the telemetry lane runs nicer than the urgent lane (alarms first on a busy machine)
        nice = sorted(os.getpriority(os.PRIO_PROCESS, pid) for pid in lanes)
        assert nice[1] - nice[0] == 5
        handles = [os.pidfd_open(pid) for pid in lanes]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        for handle in handles:
            # a lane left running would store beside the restarted ingest's own lanes
            ready, _, _ = select.select([handle], [], [], 30)
            assert ready, "a lane outlived its SIGKILLed supervisor"
            os.close(handle)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
