"""`vigil compliance --metrics-port 0`: the engine as an operator runs it answers /metrics and
/readyz on the port it prints."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading

import httpx

from tests.metrics import samples


def test_the_engine_serves_metrics_and_readiness_on_the_port_it_prints(db_url, mqtt_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(VIGIL_DATABASE_URL=db_url, VIGIL_MQTT_URL=mqtt_url)
    engine = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "compliance", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert engine.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in engine.stdout], daemon=True).start()
    try:
        while True:
            found = re.search(
                r"compliance metrics on http://127\.0\.0\.1:(\d+)/metrics", lines.get(timeout=60)
            )
            if found:
                break
        with httpx.Client(base_url=f"http://127.0.0.1:{found.group(1)}", timeout=10) as client:
            names = {name for name, _, _ in samples(client.get("/metrics").text)}
            assert "vigil_broker_reconnects_total" in names
            # ready once its MQTT client has connected (in the background, at start)
            for _ in range(600):
                ready = client.get("/readyz")
                if ready.status_code == 200:
                    break
                assert all(p.startswith("broker:") for p in ready.json()["problems"]), ready.text
                threading.Event().wait(0.05)  # another process's connection: nothing to await
            assert ready.json() == {"ready": True, "problems": []}
            assert client.get("/healthz").json() == {"alive": True}
    finally:
        engine.send_signal(signal.SIGINT)
        engine.wait(timeout=60)
    assert engine.returncode == 0
