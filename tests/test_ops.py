"""vigil.ops: the /metrics, /healthz and /readyz server every long-running process can start."""

from __future__ import annotations

import socket

import httpx
import psycopg
import pytest

from tests.metrics import samples
from vigil import ops
from vigil.metrics import DatabaseCollector


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readyz_lists_every_problem_and_clears_them(db_url):
    health = ops.Health()
    health.add_check("database", ops.database_check(lambda: psycopg.connect(db_url)))
    with (
        ops.OpsServer(health=health) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client,
    ):
        assert client.get("/readyz").json() == {"ready": True, "problems": []}
        health.report("runner x", "ended with KeyError: 'a'; restarting in 5.0s")
        health.add_check("broken check", lambda: 1 / 0)  # a check that raises is a problem
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["problems"] == [
            "broken check: check failed: ZeroDivisionError: division by zero",
            "runner x: ended with KeyError: 'a'; restarting in 5.0s",
        ]
        health.report("runner x", None)
        assert len(client.get("/readyz").json()["problems"]) == 1
        assert client.get("/healthz").json() == {"alive": True}
        nowhere = client.get("/nowhere")
        assert nowhere.status_code == 404 and "/nowhere" in nowhere.json()["detail"]


def test_a_database_that_does_not_answer_is_a_problem_and_its_figures_are_left_out():
    url = f"postgresql://vigil@127.0.0.1:{_closed_port()}/vigil?connect_timeout=2"
    health = ops.Health()
    health.add_check("database", ops.database_check(lambda: psycopg.connect(url)))
    figures = DatabaseCollector(lambda: psycopg.connect(url))
    figures.add("vigil_test_rows", "rows", ("table",), lambda conn: [({"table": "t"}, 1.0)])
    with (
        ops.OpsServer(health=health, collectors=[figures]) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client,
    ):
        (problem,) = client.get("/readyz").json()["problems"]
        assert problem.startswith("database: unavailable (OperationalError")
        text = client.get("/metrics").text  # the scrape still answers, with the process's own
        names = {name for name, _, _ in samples(text)}
        assert "vigil_test_rows" not in names
        assert "vigil_gateway_polls_total" in names or "python_info" in names


def test_a_metrics_port_in_use_is_a_configuration_error_naming_it():
    from vigil.config import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics_port.*127.0.0.1:{port}"):
            ops.OpsServer(health=ops.Health(), port=port)


def test_database_figures_are_read_at_each_scrape(db_url):
    rows = {"n": 1.0}
    figures = DatabaseCollector(lambda: psycopg.connect(db_url))
    figures.add(
        "vigil_test_widgets",
        "widgets",
        ("colour",),
        lambda conn: [
            ({"colour": "red"}, float(conn.execute("SELECT %s::float", (rows["n"],)).fetchone()[0]))
        ],
    )
    figures.add("vigil_test_done", "done", (), lambda conn: [({}, 3.0)], counter=True)
    with ops.OpsServer(health=ops.Health(), collectors=[figures]) as server:
        first = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
        rows["n"] = 7.0
        second = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
    assert ("vigil_test_widgets", {"colour": "red"}, 1.0) in samples(first)
    assert ("vigil_test_widgets", {"colour": "red"}, 7.0) in samples(second)
    assert ("vigil_test_done_total", {}, 3.0) in samples(second)
