import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from fleet.factory import FleetFactory
from vigil.services import MosquittoBroker
from vigil.testing import MqttProbe


def publish_and_receive(url: str, topic: str) -> bytes:
    """Round-trip one QoS 1 message through the broker with paho-mqtt."""
    with MqttProbe(url, topic) as probe:
        port = int(url.rsplit(":", 1)[1])
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        pub.publish(topic, b"hello", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        return probe.wait_for(1)[0].payload


def test_shared_broker_round_trip(mqtt_url, unique_id):
    assert publish_and_receive(mqtt_url, f"vigil/test/{unique_id}") == b"hello"


def test_private_broker_restarts_on_the_same_port(broker: MosquittoBroker, unique_id):
    port = broker.port
    broker.kill()
    assert not broker.running
    broker.start()
    assert broker.port == port
    assert publish_and_receive(broker.url, f"vigil/test/{unique_id}") == b"hello"


def test_private_postgres_survives_a_restart(private_postgres):
    url = private_postgres.url("vigil")
    with psycopg.connect(url, autocommit=True) as conn:
        FleetFactory(conn, at=datetime.now(UTC)).manufacturer("Otis")
    private_postgres.stop(mode="immediate")
    assert not private_postgres.running
    private_postgres.start()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name FROM manufacturers").fetchone() == ("Otis",)


def test_demo_runs_the_scenario_end_to_end_and_exits_cleanly_on_ctrl_c():
    """Simulators -> gateway -> broker -> ingest -> compliance and rescue, on a fast clock."""
    # PostgreSQL runs as the postgres user when we are root: it needs a directory it can reach.
    tmp_path = Path(tempfile.mkdtemp(prefix="vigil-demo-"))
    tmp_path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        VIGIL_DATA_DIR=str(tmp_path / "data"),
        VIGIL_API__PORT="0",
        VIGIL_DEMO__FACTOR="120",
        VIGIL_DEMO__ELEVATORS="6",
        VIGIL_DEMO__METERS="1",
        VIGIL_DEMO__POLES="2",
    )
    demo = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    awaited = [
        "Press Ctrl-C",
        "lift-0003: maintenance overdue",
        "lift-0001: incident 1 opened",
        # a controller fault becomes a work order, assigned, resolved, called back, closed
        "lift-0005: callback reached the customer (satisfaction 5): work order closed",
    ]
    assert demo.stdout is not None
    try:
        for line in demo.stdout:
            lines.append(line)
            if all(any(text in seen for seen in lines) for text in awaited):
                break
        # the banner says how to verify this run's compliance log; that command works
        command = next(ln for ln in lines if "vigil audit verify" in ln)
        audit_url = re.search(r"VIGIL_DATABASE_URL='([^']+)'", command).group(1)
        audited = subprocess.run(
            [sys.executable, "-m", "runtime.cli", "audit", "verify"],
            env={**env, "VIGIL_DATABASE_URL": audit_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert audited.returncode == 0, audited.stdout + audited.stderr
    finally:
        demo.send_signal(signal.SIGINT)
    output = "".join(lines)
    assert "Vigil demo is up." in output, output
    for text in awaited:
        assert text in output, output
    console = next(ln.split()[-1] for ln in lines if "console:" in ln)
    assert console.startswith("http://127.0.0.1:")
    db_url = next(ln.split()[-1] for ln in lines if "database:" in ln)
    with psycopg.connect(db_url) as conn:
        # one incident for the entrapment (the second storyline has its own lift)
        incidents = "SELECT count(*) FROM rescue_incidents WHERE device_id = 'lift-0001'"
        assert conn.execute(incidents).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone()[0] > 0
        steps = conn.execute(
            "SELECT s.step FROM work_order_steps s JOIN work_orders w ON w.id = s.work_order_id "
            "WHERE w.device_id = 'lift-0005' ORDER BY s.id"
        ).fetchall()
        # rule S2: unresolved after 30 minutes, the level-2 order also escalated on the way
        assert [s for (s,) in steps if s != "escalated"] == [
            "opened",
            "assigned",
            "accepted",
            "on_site",
            "resolved",
            "callback",
            "closed",
        ]

    rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, rest
    assert "stopped." in rest
    postmaster_pid = tmp_path / "data" / "postgres" / "postmaster.pid"
    assert not postmaster_pid.exists()
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == "", f"processes left behind: {leftover.stdout}"


def test_a_restarted_demo_keeps_its_port_while_the_last_run_lingers_in_time_wait():
    # the demo probes its console port before serving; a port the last run left in TIME_WAIT
    # (closed by the server side) is free to bind again with SO_REUSEADDR, as uvicorn binds
    import socket

    from runtime.demo import _port

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the port waits in TIME_WAIT
    server.close()
    client.close()
    assert _port(port) == port


def _persistent_session(url: str, client_id: str, *, subscribe: str | None = None) -> bool:
    """Connect with a lasting MQTT v5 session; whether the broker still had it."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    port = int(url.rsplit(":", 1)[1])
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    present: list[bool] = []
    connected = threading.Event()

    def on_connect(_c: object, _u: object, flags: object, _r: object, _p: object) -> None:
        present.append(flags.session_present)  # type: ignore[attr-defined]
        connected.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    try:
        assert connected.wait(10)
        if subscribe:
            client.subscribe(subscribe, qos=1)
            # the SUBSCRIBE is handled before this PUBLISH: the session holds it on disconnect
            client.publish("vigil/test/settle", b"", qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    return present[0]


def test_a_fresh_demo_broker_forgets_the_last_runs_sessions(db_url, tmp_path):
    """A restarted demo must not replay the last run's queued messages into its new database."""
    from vigil.config import Settings
    from vigil.embedded import endpoints

    tmp_path.chmod(0o755)
    settings = Settings(database_url=db_url, mqtt_url=None, data_dir=tmp_path / "data")
    with endpoints(settings) as where:
        assert not _persistent_session(where.mqtt_url, "ingest-0", subscribe="vigil/v1/#")
    with endpoints(settings) as where:  # a plain restart keeps the session (ingest needs it)
        assert _persistent_session(where.mqtt_url, "ingest-0")
    with endpoints(settings, fresh=True) as where:  # the demo's restart does not
        assert not _persistent_session(where.mqtt_url, "ingest-0")
