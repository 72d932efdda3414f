"""Gateway configuration (TOML, validated) and the resolved device list the gateway runs.

A configuration names the gateway, its broker, its on-disk buffer and its devices; each device
has a profile (a built-in model name from ``vigil/profiles/`` or a profile file), a Modbus
address (host, port, unit id), a poll period and a report strategy. ``load_config()`` validates
all of it; every error is a ``ConfigError`` naming the file, the line and the key.
docs/gateway.md is the reference.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from pydantic import Field, model_validator

from vigil.broker import broker_address
from vigil.catalog import MetricType, metric
from vigil.config import ConfigError, Section, load_file, locate, read_toml
from vigil.metrics import POLL_LAG, POLLS
from vigil.profiles import Profile, builtin_models, builtin_profile, load_profile
from vigil.wire import ID_PATTERN

DEFAULT_PORT = 502


class ReportStrategy(StrEnum):
    """When a device's readings are published."""

    CHANGE = "change"  # a metric is sent when it moved by more than its deadband
    PERIODIC = "periodic"  # every metric is sent every report interval
    BOTH = "both"  # on change, and every metric every report interval as a heartbeat


class BrokerConfig(Section):
    """The MQTT broker and the gateway's credentials on it."""

    url: str = Field(default="mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/:]+(:\d+)?/?$")
    username: str | None = None
    password: str | None = None
    password_file: Path | None = Field(default=None, description="file holding the password")
    client_id: str | None = Field(default=None, description="defaults to the gateway id")
    ca_file: Path | None = Field(default=None, description="CA bundle for mqtts://")
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # how long the broker keeps the gateway's session, and the commands sent to it, while away
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    # "3.1.1" for a broker that speaks nothing newer, such as a NATS cluster's MQTT listener: a
    # persistent session (kept as long as the broker keeps it: no expiry to ask for), and a
    # retained command forwarded live cannot be told from a live one (v5's Retain As Published)
    protocol: Literal["5", "3.1.1"] = "5"
    timeout_s: float = Field(default=10.0, gt=0, description="connect and publish timeout")
    inflight: int = Field(default=100, ge=1, le=65535, description="unacknowledged publishes")
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)

    @property
    def host(self) -> str:
        """Broker host name."""
        return broker_address(self.url).host

    @property
    def port(self) -> int:
        """Broker port (1883, or 8883 for mqtts:// when not given)."""
        return broker_address(self.url).port

    @property
    def tls(self) -> bool:
        """True for mqtts:// URLs."""
        return broker_address(self.url).tls

    def secret(self) -> str | None:
        """The password, read from ``password_file`` when one is given."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return unquote(self.password) if self.password is not None else None


class BufferConfig(Section):
    """The on-disk store-and-forward queue."""

    path: Path | None = Field(default=None, description="SQLite file; default data_dir/buffer")
    max_messages: int = Field(default=1_000_000, ge=10, description="oldest dropped past this")


class PollingDefaults(Section):
    """Defaults for every device and connection."""

    poll_s: float = Field(default=1.0, gt=0, le=86_400)
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="one Modbus request")
    backoff_initial_s: float = Field(default=1.0, gt=0, description="first reconnect delay")
    backoff_max_s: float = Field(default=60.0, gt=0, description="reconnect delay cap")


class CommandConfig(Section):
    """Which commands the gateway obeys."""

    max_age_s: float = Field(default=600.0, gt=0, description="older commands are refused")


class DeviceConfig(Section):
    """One Modbus device behind the gateway."""

    id: str = Field(pattern=ID_PATTERN.pattern)
    profile: str = Field(min_length=1, description="built-in model name or a profile file")
    host: str = Field(min_length=1)
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id")
    poll_s: float | None = Field(default=None, gt=0, le=86_400)
    timeout_s: float | None = Field(default=None, gt=0, le=60)
    report: ReportStrategy = ReportStrategy.PERIODIC
    report_interval_s: float | None = Field(
        default=None, gt=0, description="full report period; defaults to the poll period"
    )
    deadband: float = Field(default=0.0, ge=0, description="absolute, for every gauge")
    deadbands: dict[str, float] = Field(default_factory=dict, description="per metric")

    @model_validator(mode="after")
    def _deadbands_not_negative(self) -> DeviceConfig:
        for name, value in self.deadbands.items():
            if value < 0:
                raise ValueError(f"deadband of {name} must not be negative")
        return self


class GatewayConfig(Section):
    """A gateway's whole configuration file."""

    gateway_id: str = Field(pattern=ID_PATTERN.pattern)
    data_dir: Path = Field(default=Path(".vigil/gateway"), description="buffer and state")
    health_interval_s: float = Field(default=30.0, gt=0)
    broker: BrokerConfig = BrokerConfig()
    buffer: BufferConfig = BufferConfig()
    polling: PollingDefaults = PollingDefaults()
    commands: CommandConfig = CommandConfig()
    devices: list[DeviceConfig] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Device:
    """A configured device with its profile resolved and its defaults filled in."""

    id: str
    profile: Profile
    host: str
    port: int
    unit: int
    poll_s: float
    timeout_s: float
    report: ReportStrategy
    report_interval_s: float
    deadbands: dict[str, float]

    @property
    def connection(self) -> tuple[str, int]:
        """The TCP endpoint the device is reached through."""
        return (self.host, self.port)

    def deadband(self, name: str) -> float:
        """Deadband of ``name``: state metrics report every change."""
        known = metric(self.profile.kind, name)
        if known is not None and known.type is MetricType.STATE:
            return 0.0
        return self.deadbands.get(name, 0.0)


@dataclass(frozen=True, slots=True)
class Gateway:
    """A validated configuration: the settings plus the resolved devices."""

    settings: GatewayConfig
    devices: tuple[Device, ...]
    source: str = "<config>"

    @property
    def gateway_id(self) -> str:
        """The gateway's id on the wire."""
        return self.settings.gateway_id

    @property
    def buffer_path(self) -> Path:
        """Where the SQLite store-and-forward queue lives."""
        return self.settings.buffer.path or self.settings.data_dir / "buffer.sqlite3"


def load_config(path: str | Path) -> Gateway:
    """Load and validate a gateway config; errors name the file, the line and the key."""
    path = Path(path)
    settings = load_file(path, GatewayConfig)
    _, text = read_toml(path)
    base = path.resolve().parent
    settings = _relative_to(settings, base=base)
    devices = resolve_devices(settings, source=str(path), text=text, base=base)
    return Gateway(settings=settings, devices=devices, source=str(path))


def build_config(settings: GatewayConfig, *, base: Path | None = None) -> Gateway:
    """Resolve an in-memory config (tests, the demo); errors name the key."""
    devices = resolve_devices(settings, source="<config>", text="", base=base or Path.cwd())
    return Gateway(settings=settings, devices=devices)


def _relative_to(settings: GatewayConfig, *, base: Path) -> GatewayConfig:
    """Paths in a config file are relative to the file's folder."""
    data_dir = settings.data_dir if settings.data_dir.is_absolute() else base / settings.data_dir
    buffer = settings.buffer
    if buffer.path is not None and not buffer.path.is_absolute():
        buffer = buffer.model_copy(update={"path": base / buffer.path})
    broker = settings.broker
    for name in ("password_file", "ca_file"):
        value = getattr(broker, name)
        if value is not None and not value.is_absolute():
            broker = broker.model_copy(update={name: base / value})
    return settings.model_copy(update={"data_dir": data_dir, "buffer": buffer, "broker": broker})


def resolve_devices(
    settings: GatewayConfig, *, source: str, text: str, base: Path
) -> tuple[Device, ...]:
    """Devices with profiles loaded and defaults applied; the first problem is a ConfigError."""

    def fail(loc: tuple[object, ...], reason: str) -> ConfigError:
        return ConfigError(source=source, key=_dotted(loc), reason=reason, line=locate(text, loc))

    seen_ids: dict[str, int] = {}
    seen_addresses: dict[tuple[str, int, int], int] = {}
    resolved: list[Device] = []
    defaults = settings.polling
    for index, cfg in enumerate(settings.devices):
        loc = ("devices", index)
        if cfg.id in seen_ids:
            raise fail((*loc, "id"), f"duplicate device id (also devices[{seen_ids[cfg.id]}])")
        seen_ids[cfg.id] = index
        address = (cfg.host, cfg.port, cfg.unit)
        if address in seen_addresses:
            other = seen_addresses[address]
            raise fail((*loc, "unit"), f"same host, port and unit as devices[{other}]")
        seen_addresses[address] = index
        profile = _profile(
            cfg.profile, base=base, error=lambda r, loc=loc: fail((*loc, "profile"), r)
        )
        for name in cfg.deadbands:
            if name not in profile.metrics:
                raise fail((*loc, "deadbands", name), f"{profile.model} has no metric {name!r}")
        poll_s = cfg.poll_s or defaults.poll_s
        resolved.append(
            Device(
                id=cfg.id,
                profile=profile,
                host=cfg.host,
                port=cfg.port,
                unit=cfg.unit,
                poll_s=poll_s,
                timeout_s=cfg.timeout_s or defaults.timeout_s,
                report=cfg.report,
                report_interval_s=cfg.report_interval_s or poll_s,
                deadbands={name: cfg.deadbands.get(name, cfg.deadband) for name in profile.metrics},
            )
        )
    return tuple(resolved)


def _profile(name: str, *, base: Path, error: Callable[[str], ConfigError]) -> Profile:
    """A built-in profile by model name, or a profile file (relative to the config's folder)."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name) if Path(name).is_absolute() else base / name
        if not path.exists():
            raise error(f"profile file {path} does not exist")
        return load_profile(path)  # its own errors name the profile file, line and key
    try:
        return builtin_profile(name)  # includes the generated high-mast-N (1-64 lamps)
    except KeyError:
        raise error(
            f"unknown profile {name!r}; built-in profiles: {', '.join(builtin_models())}"
        ) from None


def _dotted(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Stats:
    """Running figures of one gateway process (health messages, benchmarks, tests)."""

    def __init__(self, *, lag_window: int = 100_000) -> None:
        self.polls = 0  # poll attempts, successful or not
        self.failed_polls = 0
        self.errors = 0  # failed polls plus internal errors
        self.missed_slots = 0  # poll slots skipped because the previous poll overran
        self.timeouts = 0  # Modbus requests that got no answer in time
        self.failures: Counter[str] = Counter()  # failed polls by exception type
        self.unavailable: set[str] = set()
        self.lags_s: deque[float] = deque(maxlen=lag_window)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def poll_done(self, *, ok: bool, lag_s: float) -> None:
        """Count one poll attempt and wake whoever waits for this many."""
        self.polls += 1
        self.lags_s.append(lag_s)
        POLLS.labels(outcome="ok" if ok else "failed").inc()
        POLL_LAG.observe(lag_s)
        if not ok:
            self.failed_polls += 1
            self.errors += 1
        if self._waiters:
            due = [w for w in self._waiters if w[0] <= self.polls]
            self._waiters = [w for w in self._waiters if w[0] > self.polls]
            for _, future in due:
                if not future.done():
                    future.set_result(None)

    async def wait_polls(self, count: int) -> None:
        """Wait until ``count`` poll attempts have been made in total."""
        if self.polls >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, future))
        await future

    def lag_percentile(self, fraction: float) -> float:
        """A percentile of the recent poll lags, in seconds (0 when nothing was polled)."""
        if not self.lags_s:
            return 0.0
        ordered = sorted(self.lags_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
