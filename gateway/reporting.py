"""Turns poll outcomes into wire messages in the outbox: events first, then the telemetry batch.

Per device and poll cycle the gateway queues at most: one ``available`` event batch (when
reachability changed), one event batch with the transitions of the elevator state metrics, and
one telemetry batch with the samples the report strategy selects. Every message takes the next
number of the device's one sequence counter; timestamps are the poll's, fixed here for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.flows import (
    Decoded,
    ReportState,
    availability_event,
    detect_events,
    edge_metrics,
    select_samples,
)
from gateway.models import Device, Stats
from gateway.store import Outbox, Outgoing
from vigil.wire import Event, EventBatch, Sample, TelemetryBatch, encode

log = logging.getLogger(__name__)

MAX_ITEMS = 5_000  # the wire's batch limit
_T = TypeVar("_T")


@dataclass(slots=True)
class DeviceState:
    """What the gateway remembers about one device between polls."""

    available: bool | None = None
    report: ReportState = field(default_factory=ReportState)
    states: dict[str, float] = field(default_factory=dict)  # last good value of edge metrics
    unusable_logged: bool = False


class Reporter:
    """The poll handler: decides what a poll publishes and queues it."""

    def __init__(
        self,
        *,
        gateway_id: str,
        devices: Sequence[Device],
        outbox: Outbox,
        stats: Stats,
        after_poll: Callable[[Device, Decoded, int], None] | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.outbox = outbox
        self.stats = stats
        self.after_poll = after_poll
        self.state: dict[str, DeviceState] = {d.id: DeviceState() for d in devices}
        self.watched = {d.id: edge_metrics(d.profile) for d in devices}

    def polled(self, device: Device, *, ts: int, decoded: Decoded) -> None:
        """Queue what a successful poll publishes."""
        state = self.state[device.id]
        came_back = availability_event(available=True, was=state.available, ts=ts)
        if state.available is False:
            log.info("%s answers again", device.id)
        state.available = True
        self.stats.unavailable.discard(device.id)
        if decoded.unusable and not state.unusable_logged:
            log.warning("%s: non-finite values not published: %s", device.id, decoded.unusable)
            state.unusable_logged = True
        self.stats.errors += len(decoded.unusable)
        events = detect_events(
            watched=self.watched[device.id], readings=decoded.readings, previous=state.states, ts=ts
        )
        samples = select_samples(
            device=device, readings=decoded.readings, ts=ts, state=state.report
        )
        messages: list[Outgoing] = []
        if came_back is not None:
            # On its own: a receiver that does not know ``available`` loses nothing else.
            messages.append(self._events(device, [came_back]))
        for chunk in _chunks(events):
            messages.append(self._events(device, chunk))
        for chunk in _chunks(samples):
            messages.append(self._telemetry(device, chunk))
        self.outbox.append(messages)
        if self.after_poll is not None:
            self.after_poll(device, decoded, ts)

    def failed(self, device: Device, *, ts: int, error: BaseException) -> None:
        """Mark the device unavailable; the event is queued once per outage."""
        state = self.state[device.id]
        self.stats.unavailable.add(device.id)
        went = availability_event(available=False, was=state.available, ts=ts)
        state.available = False
        if went is None:
            log.debug("%s still unavailable: %s", device.id, error)
            return
        log.warning("%s unavailable: %s: %s", device.id, type(error).__name__, error)
        self.outbox.append([self._events(device, [went])])

    def _events(self, device: Device, events: Sequence[Event]) -> Outgoing:
        seq = self.outbox.take_seq(device.id)
        topic, payload = encode(
            EventBatch(self.gateway_id, device.id, seq, tuple(events), self.outbox.epoch)
        )
        return Outgoing(topic, payload, seq_device=device.id, seq=seq)

    def _telemetry(self, device: Device, samples: Sequence[Sample]) -> Outgoing:
        seq = self.outbox.take_seq(device.id)
        topic, payload = encode(
            TelemetryBatch(self.gateway_id, device.id, seq, tuple(samples), self.outbox.epoch)
        )
        return Outgoing(topic, payload, seq_device=device.id, seq=seq)


def _chunks(items: Sequence[_T]) -> list[Sequence[_T]]:
    return [items[i : i + MAX_ITEMS] for i in range(0, len(items), MAX_ITEMS)]
