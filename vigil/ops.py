"""What an operator's tools ask a running process: ``/metrics`` (Prometheus), ``/healthz`` (the
process is alive) and ``/readyz`` (it can do its work: database, broker and runners ready).

``Health`` holds the named checks; each returns ``None`` when fine or a sentence saying what is
wrong. ``OpsServer`` answers the three paths from a thread of its own, so a blocked event loop or
a busy worker cannot keep it from saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from vigil.config import ConfigError
from vigil.metrics import exposition

log = logging.getLogger(__name__)

Check = Callable[[], str | None]


def add_metrics_port(parser: argparse.ArgumentParser) -> None:
    """The ``--metrics-port`` option of a long-running process's command."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz on this port (0: any free port; default: "
        "metrics_port)",
    )


class Health:
    """Named readiness checks, and problems that parts of the process report as they happen."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._problems: dict[str, str] = {}
        self._lock = threading.Lock()

    def add_check(self, name: str, check: Check) -> None:
        """Ask ``check()`` at every /readyz."""
        self._checks[name] = check

    def report(self, name: str, problem: str | None) -> None:
        """Set (or with None clear) the current problem of part ``name``."""
        with self._lock:
            if problem is None:
                self._problems.pop(name, None)
            else:
                self._problems[name] = problem

    def problems(self) -> list[str]:
        """What keeps the process from being ready, one sentence each ("name: why")."""
        found: list[str] = []
        for name, check in list(self._checks.items()):
            try:
                problem = check()
            except Exception as exc:  # a check that fails is itself a problem
                problem = f"check failed: {type(exc).__name__}: {exc}"
            if problem:
                found.append(f"{name}: {problem}")
        with self._lock:
            found.extend(f"{name}: {problem}" for name, problem in sorted(self._problems.items()))
        return found


def database_check(connect: Callable[[], object], *, timeout_s: float = 2.0) -> Check:
    """Ready while ``SELECT 1`` answers on a connection from ``connect()`` (a pool's
    ``connection`` or ``psycopg.connect``)."""

    def check() -> str | None:
        try:
            with connect() as conn:  # type: ignore[attr-defined]
                conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
                conn.execute("SELECT 1")
        except Exception as exc:
            return f"unavailable ({type(exc).__name__}: {str(exc).strip()[:200]})"
        return None

    return check


def loop_check(loop: asyncio.AbstractEventLoop, *, within_s: float = 5.0) -> Check:
    """Ready while the event loop runs a no-op within ``within_s``: a loop blocked by a
    synchronous call stalls every task on it, runners included."""

    def check() -> str | None:
        if loop.is_closed():
            return "the event loop is closed"
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:
            return "the event loop is closed"
        started = time.monotonic()
        if not answered.wait(within_s):
            return (
                f"the event loop has not answered for {time.monotonic() - started:.1f}s (stalled)"
            )
        return None

    return check


class OpsServer:
    """Serves /metrics, /healthz and /readyz on ``host:port`` (port 0: any free port, see
    ``.port``) until ``close()``."""

    def __init__(
        self,
        *,
        health: Health,
        host: str = "127.0.0.1",
        port: int = 0,
        collectors: Iterable[Collector] = (),
    ) -> None:
        self.health = health
        self.collectors = list(collectors)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, exposition(server.collectors), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._json(200, {"alive": True})
                elif path == "/readyz":
                    problems = server.health.problems()
                    self._json(
                        503 if problems else 200, {"ready": not problems, "problems": problems}
                    )
                else:
                    self._json(404, {"detail": f"no such path: {path}"})

            def _json(self, status: int, body: dict) -> None:
                self._answer(status, json.dumps(body).encode(), "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds are not news

        try:
            self._http = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:  # a port in use or not ours: said plainly, as a setting
            raise ConfigError(
                source="--metrics-port",
                key="metrics_port",
                reason=f"cannot serve on {host}:{port}: {exc.strerror or exc}",
            ) from None
        self._http.daemon_threads = True
        self.host = host
        self.port = int(self._http.server_address[1])
        self.address = (host, self.port)
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="vigil-ops", daemon=True
        )

    def start(self) -> OpsServer:
        """Start answering; returns self."""
        self._thread.start()
        log.info(
            "metrics and health on http://%s:%d/ (metrics, healthz, readyz)", self.host, self.port
        )
        return self

    def close(self) -> None:
        """Stop answering and free the port."""
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
