"""Settings from a TOML file plus the environment, validated; errors name the file, line and key.

``load_settings()`` builds the platform ``Settings`` (file values, overridden by ``VIGIL_*``
environment variables, e.g. ``VIGIL_DATABASE_URL`` or ``VIGIL_INGEST__BATCH_SIZE``).
``load_file()`` validates any other TOML file (a gateway config, a scenario) against a model.
Unknown keys are errors everywhere.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "VIGIL_"
ENV_NESTED = "__"
CONFIG_ENV = "VIGIL_CONFIG"

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration problem, pinned to its source (file and line, or variable) and key."""

    def __init__(self, *, source: str, key: str, reason: str, line: int | None = None) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        self.line = line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: key '{key}': {reason}" if key else f"{where}: {reason}")


class Section(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ClockSettings(Section):
    """Which clock the processes run on."""

    kind: Literal["real", "accelerated"] = "real"
    factor: float = Field(default=1440.0, gt=0, description="simulated seconds per real second")
    start: datetime | None = None


class IngestSettings(Section):
    """Ingest batching and consumption."""

    workers: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=20_000, ge=1)
    flush_interval_ms: int = Field(default=200, ge=1, le=200)
    client_id: str = "vigil-ingest"
    # `vigil ingest` runs each worker's telemetry lane in a process this much nicer than the
    # urgent lane's, so that a saturated machine takes alarms first (docs/ingest.md)
    telemetry_niceness: int = Field(default=5, ge=0, le=19)
    # the shared-subscription group of several workers; one worker always subscribes plainly
    # (Mosquitto restores plain subscriptions across its restart, not shared ones)
    share_group: str = Field(default="ingest", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, description="broker keeps a session")
    receive_maximum: int = Field(default=1000, ge=1, le=65535, description="unacked messages")
    # NATS JetStream path: a message a worker took but did not acknowledge within this long
    # (the worker died) is delivered again, to any worker
    ack_wait_s: float = Field(default=30.0, gt=0, le=3600)
    # how many nodes keep each message (the NATS cluster's mqtt.stream_replicas)
    nats_replicas: int = Field(default=3, ge=1, le=5)
    # what the broker was configured to queue per session (Mosquitto's max_queued_messages; its
    # stock value is 1000, 0 is unlimited) and how long a database outage it must bridge:
    # `vigil ingest` warns at start when that cannot hold at the fleet's current rate
    broker_max_queued_messages: int = Field(default=1000, ge=0)
    outage_tolerance_s: float = Field(default=60.0, gt=0)
    unknown_device_recheck_s: float = Field(default=1.0, ge=0, description="negative-cache TTL")
    partitions_ahead_days: int = Field(default=3, ge=1, le=60)
    retention_days: int = Field(default=365, ge=91, description="older telemetry is dropped")
    compress_after_days: int = Field(default=7, ge=1, description="TimescaleDB only")
    maintenance_interval_s: float = Field(default=300.0, gt=0)


class ComplianceSettings(Section):
    """Defaults of the compliance engine; per-jurisdiction values live in the database."""

    sweep_interval_s: float = Field(default=60.0, gt=0)
    # each shard's sweep is incremental (only the elevators due); once per this interval it is
    # a full one, a check that should find nothing the incremental sweeps missed
    full_sweep_interval_s: float = Field(default=86400.0, gt=0)
    # the findings checks (M8 drills, M10 licences and certificates, M11 self-tests, M12
    # inspections) read the whole fleet: dates and a 72-hour test, so every quarter hour
    findings_interval_s: float = Field(default=900.0, gt=0)
    signing_key_path: Path | None = None
    checkpoint_interval_s: float = Field(default=3600.0, gt=0)


class RetentionSettings(Section):
    """Rule A3: how long records are kept at least; the purge deletes them only after that."""

    maintenance_years: int = Field(default=4, ge=1, le=100, description="TSG T5002: 4 years")
    service_years: int = Field(default=3, ge=1, le=100, description="other service records")
    purge_interval_s: float = Field(default=86400.0, gt=0)


class AlertsSettings(Section):
    """Alert delivery and rescue dispatch defaults (per-jurisdiction deadlines live in the db)."""

    webhook_secret: str = Field(default="", description="HMAC-SHA256 key signing webhook bodies")
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    retry_max_attempts: int = Field(default=5, ge=1, le=50)
    retry_base_s: float = Field(default=2.0, gt=0, description="first retry delay; then doubles")
    retry_cap_s: float = Field(default=300.0, gt=0)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "vigil@localhost"
    mqtt_topic_prefix: str = Field(default="vigil/alerts", pattern=r"^[A-Za-z0-9_/-]{1,100}$")
    roster_horizon_h: float = Field(default=24.0, gt=0, description="rule R3: gaps looked for")
    roster_check_interval_s: float = Field(default=3600.0, gt=0)


class ApiSettings(Section):
    """HTTP API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)


class DemoSettings(Section):
    """What ``vigil demo`` runs."""

    sites: int = Field(default=3, ge=1, le=26)
    elevators: int = Field(default=30, ge=3)
    meters: int = Field(default=6, ge=0)
    poles: int = Field(default=6, ge=1)
    # Simulated seconds per real second: fast enough to watch a maintenance lapse to lockout in
    # minutes, slow enough for a person to take an entrapment from alarm to closed.
    factor: float = Field(default=10.0, gt=0, le=3600)
    # The scenario's second entrapment is left to the person at the console.
    leave_second_entrapment: bool = True


class Settings(BaseSettings):
    """Platform-wide settings."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        extra="forbid",
    )

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL every process connects with (the application role); "
        "embedded if unset",
    )
    database_admin_url: str | None = Field(
        default=None,
        description="URL of the role that owns the schema, for migrations (default: "
        "database_url); the application role is granted only what it uses",
    )
    mqtt_url: str | None = Field(default=None, description="mqtt://host:port; embedded if unset")
    data_dir: Path = Path(".vigil")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "json": one JSON object per line (time, level, logger, message, ids), for a collector
    log_format: Literal["text", "json"] = "text"
    # /metrics, /healthz and /readyz of `vigil gateway|ingest|compliance` (docs/operations.md);
    # unset: not served (0: any free port, printed at start)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    clock: ClockSettings = ClockSettings()
    ingest: IngestSettings = IngestSettings()
    compliance: ComplianceSettings = ComplianceSettings()
    api: ApiSettings = ApiSettings()
    alerts: AlertsSettings = AlertsSettings()
    retention: RetentionSettings = RetentionSettings()
    demo: DemoSettings = DemoSettings()


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; a syntax error names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source=str(path), key="", reason=f"cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            source=str(path),
            key="",
            reason=f"invalid TOML: {exc}",
            line=int(found.group(1)) if found else None,
        ) from None


def load_file(path: str | Path, model: type[M]) -> M:
    """Validate a TOML file against ``model``; the first error names the file, line and key."""
    path = Path(path)
    data, text = read_toml(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _file_error(path, text, exc) from None


def load_settings(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from ``path`` (or ``$VIGIL_CONFIG``) overridden by ``VIGIL_*`` variables."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    text = ""
    if path:
        data, text = read_toml(Path(path))
    try:
        return _build_settings(data, env)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        if path and _has_path(data, loc):
            raise _file_error(Path(path), text, exc) from None
        variable = ENV_PREFIX + ENV_NESTED.join(str(part) for part in loc).upper()
        raise ConfigError(
            source=f"environment {variable}", key=_dotted(loc), reason=first["msg"]
        ) from None


def _build_settings(data: dict[str, Any], env: Mapping[str, str]) -> Settings:
    class _Sourced(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            env_source = EnvSettingsSource(settings_cls, case_sensitive=False)
            env_source.env_vars = {k.lower(): v for k, v in env.items()}
            return (env_source, InitSettingsSource(settings_cls, init_kwargs=data))

    built = _Sourced()
    return Settings.model_construct(
        **{name: getattr(built, name) for name in Settings.model_fields}
    )


def _file_error(path: Path, text: str, exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    reason = first["msg"]
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    return ConfigError(source=str(path), key=_dotted(loc), reason=reason, line=locate(text, loc))


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _has_path(data: Any, loc: Sequence[Any]) -> bool:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False
    return True


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def locate(text: str, loc: Sequence[Any]) -> int | None:
    """Best line number (1-based) in TOML ``text`` for the key path ``loc``; None if not found."""
    target = [str(part) for part in loc]
    array_counts: dict[tuple[str, ...], int] = {}
    table: list[str] = []
    best: tuple[int, int] | None = None  # (matched depth, line)
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names = [n.strip().strip("\"'") for n in header.group(2).split(".")]
            if header.group(1) == "[[":
                key = tuple(names)
                array_counts[key] = array_counts.get(key, -1) + 1
                table = [*names[:-1], names[-1], str(array_counts[key])]
            else:
                table = names
            path = table
        else:
            key_match = _KEY.match(line)
            if not key_match or line.lstrip().startswith("#"):
                continue
            path = [*table, *(k.strip().strip("\"'") for k in key_match.group(1).split("."))]
        depth = _common_prefix(path, target)
        if depth == len(path) and (best is None or depth > best[0]):
            best = (depth, number)
            if depth == len(target):
                return number
    return best[1] if best else None


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
