"""Types of the ingest pipeline: deliveries from the broker, verdicts, batches and counters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from vigil.catalog import DeviceKind
from vigil.wire import (
    CommandResult,
    EventBatch,
    Health,
    Message,
    Rejected,
    Status,
    TelemetryBatch,
)


class Lane(StrEnum):
    """Which messages a worker takes: all of them, telemetry and the rest (not the urgent
    channels), or only the urgent ones (events, command results, gateway status)."""

    ALL = "all"
    TELEMETRY = "telemetry"
    URGENT = "urgent"


class IngestReason(StrEnum):
    """Dead-letter reasons ingest adds to the codec's (``vigil.wire.Reason``)."""

    UNKNOWN_GATEWAY = "unknown_gateway"
    UNKNOWN_DEVICE = "unknown_device"
    WRONG_GATEWAY = "wrong_gateway"  # the device is registered under another gateway
    DECOMMISSIONED_DEVICE = "decommissioned_device"
    UNKNOWN_METRIC = "unknown_metric"  # not a metric of the device's kind
    UNKNOWN_COMMAND = "unknown_command"  # a result for a command never issued to that device
    STORAGE_ERROR = "storage_error"  # the database refused the message itself


@dataclass(frozen=True, slots=True)
class Delivery:
    """One PUBLISH received from the broker, not yet acknowledged."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    # Connection generation: an ack is only valid on the connection that received the message.
    generation: int
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What ingest needs to know about a registered device."""

    device_id: str
    kind: DeviceKind
    gateway_id: str | None
    decommissioned: bool
    ref: int  # devices.ref: the compact number telemetry rows carry


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that failed validation, kept with its raw bytes."""

    topic: str
    payload: bytes
    reason: str
    detail: str
    received_at: datetime
    gateway_id: str | None = None
    device_id: str | None = None


StoredMessage = TelemetryBatch | EventBatch | CommandResult | Status | Health


@dataclass(frozen=True, slots=True)
class Accepted:
    """A decoded message that passed every check the registry can make."""

    message: StoredMessage
    topic: str
    payload: bytes
    received_at: datetime
    # kind of the device (None for gateway messages), for rollups
    kind: DeviceKind | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """A delivery decoded on arrival: a wire message or why the codec refused it."""

    delivery: Delivery
    decoded: Message | Rejected
    received_at: datetime


@dataclass(slots=True)
class Batch:
    """What one transaction stores, and the deliveries it acknowledges once committed."""

    items: list[Received] = field(default_factory=list)
    points: int = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def redelivery(self) -> bool:
        """True when the broker flagged any delivery as a possible duplicate."""
        return any(item.delivery.redelivered for item in self.items)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a committed batch changed."""

    points_offered: int
    points_stored: int
    events_stored: int
    command_results_stored: int
    dead_letters: int
    states_changed: int
    rejected: tuple[str, ...] = ()  # reason of each dead letter


@dataclass
class IngestStats:
    """Counters of one worker; tests and the benchmark wait on them."""

    received: int = 0
    acked: int = 0
    batches: int = 0
    messages_stored: int = 0
    points_stored: int = 0
    points_duplicate: int = 0
    events_stored: int = 0
    command_results_stored: int = 0
    dead_letters: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    database_errors: int = 0
    database_up: bool = True
    subscribed: bool = False
    stalled: str | None = None  # why the worker stopped: one of its threads died
    heartbeat: float = 0.0  # time.monotonic() of the collector's latest pass
    broker_up: bool = False  # the consumer's connection, as the collector last saw it
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def update(self, change: Callable[[IngestStats], None]) -> None:
        """Apply ``change`` under the lock and wake waiters."""
        with self._changed:
            change(self)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[IngestStats], bool], *, timeout: float) -> bool:
        """Block until ``predicate(self)`` holds; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)
