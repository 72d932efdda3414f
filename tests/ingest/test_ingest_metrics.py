"""`vigil ingest --metrics-port`: one endpoint adds up every lane process's figures (points,
dead letters by reason, batch commits), and /readyz fails while the database is down."""

from __future__ import annotations

import queue
import re
import signal
import threading
from collections.abc import Callable

import httpx

from tests.ingest.conftest import Publisher, register_fleet, start_ingest, telemetry, wait_for_count
from tests.metrics import sample
from vigil.clock import RealClock


def test_one_endpoint_adds_up_the_lanes_and_readyz_follows_the_database(
    private_postgres, broker, unique_id
):
    url = private_postgres.url("vigil")
    fleet = register_fleet(url, gateway=unique_id, meters=2)
    process = start_ingest(url, broker.url, "--metrics-port", "0")
    lines: queue.Queue[str] = queue.Queue()
    for stream in (process.stdout, process.stderr):
        threading.Thread(target=lambda s=stream: [lines.put(x) for x in s], daemon=True).start()

    def until(pattern: str) -> re.Match[str]:
        while True:
            found = re.search(pattern, lines.get(timeout=60))
            if found:
                return found

    try:
        port = int(until(r"ingest metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        until("subscribed to")
        until("subscribed to")  # both lanes
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        now = RealClock().now_ms()
        pub = Publisher(broker.url)
        for i in range(20):
            pub.publish(*telemetry(fleet, device=fleet.meters[i % 2], seq=i, start_ms=now - i * 50))
        pub.publish(f"vigil/v1/telemetry/{fleet.gateway}/{fleet.meters[0]}", b"{not json")
        pub.close()
        assert wait_for_count(url, "SELECT count(*) FROM telemetry", 200) == 200
        assert wait_for_count(url, "SELECT count(*) FROM dead_letters", 1) == 1
        text = _until_metrics(
            client, lambda t: sample(t, "vigil_ingest_points_stored_total") >= 200
        )
        assert sample(text, "vigil_ingest_points_stored_total", lane="telemetry") == 200
        assert sample(text, "vigil_ingest_dead_letters_total") == 1
        assert sample(text, "vigil_ingest_batch_commit_seconds_count") >= 1
        # each lane tells the supervisor how it is doing a few times a second
        assert _until(client, "/readyz", 200).json() == {"ready": True, "problems": []}

        private_postgres.stop(mode="immediate")
        down = client.get("/readyz")
        assert down.status_code == 503
        assert any(p.startswith("database: unavailable") for p in down.json()["problems"])
        assert client.get("/healthz").status_code == 200
        private_postgres.start()
        _until(client, "/readyz", 200)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0


def _until_metrics(client: httpx.Client, done: Callable[[str], bool]) -> str:
    """The exposition once ``done(text)``: lanes count a batch right after committing it."""
    for _ in range(600):
        text = client.get("/metrics").text
        if done(text):
            return text
        threading.Event().wait(0.05)  # another process's figures: nothing here to await
    raise AssertionError(f"metrics never got there:\n{text}")


def _until(client: httpx.Client, path: str, status: int) -> httpx.Response:
    """``path``'s answer once it has ``status`` (within 30 s)."""
    for _ in range(600):
        answer = client.get(path)
        if answer.status_code == status:
            return answer
        threading.Event().wait(0.05)  # the lanes' status comes from other processes
    raise AssertionError(f"{path} stayed {answer.status_code}: {answer.text}")
