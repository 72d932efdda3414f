"""Private PostgreSQL and Mosquitto instances on free ports, for the demo and the tests.

Both use the system's binaries. PostgreSQL refuses to run as root, so when we are root the
server runs as the ``postgres`` system user. Each instance lives in its own data directory and
can be stopped, killed and restarted on the same port (fault tests rely on that).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A private service could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ServiceError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def postgres_bindir() -> Path:
    """Directory of the newest installed PostgreSQL server binaries."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServiceError(
        "no PostgreSQL server binaries (initdb) found: install PostgreSQL "
        "(`make test` does it with apt-get) or set VIGIL_DATABASE_URL"
    )


PERSISTENCE_FILE = "mosquitto.db"  # Mosquitto's saved sessions and queued messages


def mosquitto_binary() -> Path:
    """Path of the mosquitto broker binary."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if not found:
        raise ServiceError(
            "no mosquitto binary found: install Mosquitto (`make test` does it with apt-get) "
            "or set VIGIL_MQTT_URL"
        )
    return Path(found)


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as, when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceError("running as root and no 'postgres' user exists to run PostgreSQL")


class PostgresServer:
    """A private PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        durable: bool = True,
        timescaledb: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        # server settings beyond the defaults below (a benchmark's memory, say)
        self.settings = dict(settings or {})
        self.port = port or free_port()
        self.durable = durable
        # load TimescaleDB at start (it cannot be created in a database otherwise)
        self.timescaledb = timescaledb
        self.user = "postgres"
        self._bindir = postgres_bindir()
        self._owner = _run_as()
        # scram-sha-256 on every connection, loopback and socket alike: the superuser's password
        # lives beside the data directory (mode 0600); a cluster made before has none (trust)
        self.password_file = self.data_dir.with_name(self.data_dir.name + ".password")
        self.password: str | None = (
            self.password_file.read_text().strip() if self.password_file.exists() else None
        )

    def url(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> str:
        """Connection URL for a database of this server (as the superuser unless given)."""
        if user is None:
            user, password = self.user, self.password
        secret = f":{quote(password, safe='')}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, *args: str) -> list[str]:
        command = [str(self._bindir / args[0]), *args[1:]]
        if self._owner is not None:
            return ["runuser", "-u", self._owner.pw_name, "--", *command]
        return command

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def initialise(self) -> None:
        """Create the cluster when the data directory is empty."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        password = secrets.token_urlsafe(24)
        # readable by the server's user, gone after initdb (the data directory must be empty)
        pwfile = self.data_dir.with_name(f".{self.data_dir.name}.initdb-pw")
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            result = subprocess.run(
                self._cmd(
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ),
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode == 0:
            self.password_file.touch(mode=0o600)
            self.password_file.write_text(password + "\n")
            self.password = password
        if result.returncode != 0:
            reason = result.stderr.strip() or result.stdout.strip()
            if "Permission denied" in reason and self._owner is not None:
                reason += f" (user {self._owner.pw_name} must be able to reach every parent folder)"
            raise ServiceError(f"initdb failed: {reason}")

    def start(self) -> None:
        """Start the server (initialising it first if needed) and wait until it accepts."""
        self.initialise()
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-p {self.port}",
            f"-k {self.data_dir}",
            "-c max_connections=200",
            "-c shared_buffers=256MB",
        ]
        if self.timescaledb:
            options += [
                "-c shared_preload_libraries=timescaledb",
                "-c timescaledb.telemetry_level=off",
                "-c max_worker_processes=64",
                "-c timescaledb.max_background_workers=48",
            ]
        if not self.durable:
            # Test clusters are throwaway: trade crash safety for speed.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        result = subprocess.run(
            self._cmd(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"PostgreSQL did not start: {self._log_tail()}")
        wait_for_port(self.port)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``fast`` or ``immediate``); a no-op when it is not running."""
        if not self.running:
            return
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"),
            capture_output=True,
            check=False,
        )

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would."""
        pid = self.pid
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)

    @property
    def pid(self) -> int | None:
        """PID of the postmaster, if running."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    @property
    def running(self) -> bool:
        """True while the postmaster is alive."""
        return self.pid is not None

    def _log_tail(self) -> str:
        try:
            return "\n".join((self.data_dir / "server.log").read_text().splitlines()[-15:])
        except OSError:
            return "(no server log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Daemon:
    """A private server run as a child process: started from a config file it writes, stopped
    cleanly or SIGKILLed as a crash would, its log kept in ``data_dir``."""

    data_dir: Path
    _binary: Path
    _log_name: str
    _process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        raise NotImplementedError

    def _ports(self) -> list[int]:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server and wait until it accepts connections on every port."""
        if self.running:
            return
        config = self._write_config()
        self._process = subprocess.Popen(
            [str(self._binary), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.data_dir / self._log_name, "ab"),
            start_new_session=True,
        )
        try:
            for port in self._ports():
                wait_for_port(port, timeout=15)
        except ServiceError:
            self.kill()
            reason = self._log_tail()
            raise ServiceError(f"{self._binary.name} did not start: {reason}") from None

    def stop(self) -> None:
        """Stop the server cleanly."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same ports."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """True while the server's process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    def _log_tail(self) -> str:
        try:
            return (self.data_dir / self._log_name).read_text()[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MosquittoBroker(_Daemon):
    """A private Mosquitto broker on 127.0.0.1:``port`` with persistence in ``data_dir``."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self._binary = mosquitto_binary()
        self._log_name = "mosquitto.log"
        self._process = None

    @property
    def url(self) -> str:
        """mqtt:// URL of this broker."""
        return f"mqtt://127.0.0.1:{self.port}"

    def forget_sessions(self) -> None:
        """Before start: drop the saved sessions, subscriptions and queued messages."""
        (self.data_dir / PERSISTENCE_FILE).unlink(missing_ok=True)

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            f"persistence_file {PERSISTENCE_FILE}",
            "autosave_interval 1",
            # Persistent sessions must hold everything a stopped consumer has not taken yet.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "max_packet_size 1048576",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        config.write_text("\n".join(lines) + "\n")
        return config

    def _ports(self) -> list[int]:
        return [self.port]


def nats_binary() -> Path:
    """Path of the nats-server binary (Debian's package ``nats-server``, 2.9 or later)."""
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
    )
    if not found:
        raise ServiceError("no nats-server binary found: install NATS (`make test` does it)")
    return Path(found)


class NatsServer(_Daemon):
    """One node of a private NATS cluster on 127.0.0.1: client, cluster and MQTT listeners,
    JetStream storing in ``data_dir``; MQTT's own streams replicated ``replicas`` times."""

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str,
        routes: list[int],
        cluster_port: int,
        replicas: int,
        port: int | None = None,
        mqtt_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.name = name
        self.port = port or free_port()
        self.mqtt_port = mqtt_port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.replicas = replicas
        self._binary = nats_binary()
        self._log_name = "nats.log"
        self._process = None

    @property
    def url(self) -> str:
        """nats:// URL of this node."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def mqtt_url(self) -> str:
        """mqtt:// URL of this node's MQTT listener (MQTT 3.1.1)."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
        config = self.data_dir / "nats.conf"
        # a single node runs JetStream standalone: a cluster of one never elects a leader
        cluster = (
            f"cluster {{ name: vigil, listen: 127.0.0.1:{self.cluster_port}, "
            f"routes: [{routes}] }}\n"
            if len(self.routes) > 1
            else ""
        )
        config.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{ store_dir: "{self.data_dir / "jetstream"}" }}\n'
            f"{cluster}"
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, stream_replicas: {self.replicas} }}\n"
        )
        return config

    def _ports(self) -> list[int]:
        return [self.port, self.mqtt_port]


class NatsCluster:
    """``size`` NATS nodes routed to each other, JetStream and MQTT on each."""

    def __init__(self, data_dir: Path, *, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                Path(data_dir) / f"n{i + 1}",
                name=f"n{i + 1}",
                routes=cluster_ports,
                cluster_port=cluster_ports[i],
                replicas=min(3, size),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """One nats:// URL naming every node (``nats://a:1,b:2``), as ingest takes it."""
        return "nats://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        """Start every node."""
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
