"""Decisions of the gateway, free of I/O: decoding a poll, what to report, which edges to send.

Everything here is a pure function of its arguments, so the report strategies, the edge
detection and the command outcomes are tested without a device or a broker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.models import Device, ReportStrategy
from vigil.catalog import ELEVATOR_EVENT_METRICS, DeviceKind, LockoutState
from vigil.profiles import (
    Block,
    Point,
    Profile,
    Register,
    decode_block,
    decode_value,
    encode_value,
    in_range,
)
from vigil.wire import CommandAction, CommandOutcome, Event, Sample

AVAILABLE = "available"  # the event metric that says whether the gateway reaches a device


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded register value; ``good`` is False outside the register's declared range."""

    metric: str
    value: float
    good: bool


@dataclass(frozen=True, slots=True)
class Decoded:
    """A poll's readings, and the metrics whose raw value could not be used (NaN, infinity)."""

    readings: dict[str, Reading]
    unusable: tuple[str, ...] = ()


def words_of(block: Block, response_values: Sequence[int | bool]) -> list[int | bool]:
    """The words of a read response that belong to ``block`` (bit reads come padded to bytes)."""
    if len(response_values) < block.count:
        raise ValueError(
            f"short response: {len(response_values)} of {block.count} "
            f"{'bits' if block.table.is_bits else 'registers'} at {block.start}"
        )
    return list(response_values[: block.count])


def decode_poll(
    *, profile: Profile, blocks: Sequence[tuple[Block, Sequence[int | bool]]]
) -> Decoded:
    """Readings of every register covered by ``blocks`` (each with the words read for it)."""
    registers: dict[str, Register] = {reg.metric: reg for reg in profile.registers}
    readings: dict[str, Reading] = {}
    unusable: list[str] = []
    for block, words in blocks:
        for name, value in decode_block(words, block=block, registers=profile.registers).items():
            if not math.isfinite(value):
                # The wire refuses non-finite numbers; such a reading is counted, not sent.
                unusable.append(name)
                continue
            readings[name] = Reading(name, value, in_range(value, register=registers[name]))
    return Decoded(readings, tuple(unusable))


@dataclass(slots=True)
class ReportState:
    """What was last reported for one device (lives as long as the gateway process)."""

    sent: dict[str, Reading] = field(default_factory=dict)
    next_full_ms: int | None = None  # when the next full report falls due (fixed rate)


def select_samples(
    *, device: Device, readings: Mapping[str, Reading], ts: int, state: ReportState
) -> list[Sample]:
    """The samples to publish for one poll under the device's report strategy; updates state."""
    # Reports fall due at a fixed rate, not a period after the last report's poll: a late poll
    # must not push the next report out (the on-time poll after a late one used to publish
    # nothing). Half a poll period of slack lets a poll that starts a little early carry it.
    slack_ms = device.poll_s * 500
    interval_ms = int(device.report_interval_s * 1000)
    due_at = state.next_full_ms
    full_due = device.report is not ReportStrategy.CHANGE and (
        due_at is None or ts + slack_ms >= due_at
    )
    if full_due:
        # keep the rate; start afresh after a gap (the device was away, the gateway stopped)
        base = due_at if due_at is not None and ts - due_at < interval_ms else ts
        state.next_full_ms = base + interval_ms
    chosen: list[Sample] = []
    for name, reading in readings.items():
        if full_due or (
            device.report is not ReportStrategy.PERIODIC
            and _changed(reading, state.sent.get(name), deadband=device.deadband(name))
        ):
            chosen.append(Sample(name, ts, reading.value, reading.good))
            state.sent[name] = reading
    return chosen


def _changed(reading: Reading, previous: Reading | None, *, deadband: float) -> bool:
    if previous is None or previous.good != reading.good:
        return True
    if deadband <= 0:
        return reading.value != previous.value
    return abs(reading.value - previous.value) > deadband


def edge_metrics(profile: Profile) -> frozenset[str]:
    """Metrics of ``profile`` whose transitions are sent at once as events."""
    if profile.kind is DeviceKind.ELEVATOR:
        return ELEVATOR_EVENT_METRICS & frozenset(profile.metrics)
    return frozenset()


def detect_events(
    *,
    watched: frozenset[str],
    readings: Mapping[str, Reading],
    previous: dict[str, float],
    ts: int,
) -> list[Event]:
    """Transitions of ``watched`` metrics since the last poll; updates ``previous``.

    Only good readings make edges: a flagged value is published as a bad sample, but it is
    not a state the equipment is in. The first poll after start has no previous value (null).
    """
    events: list[Event] = []
    for name in sorted(watched):
        reading = readings.get(name)
        if reading is None or not reading.good:
            continue
        before = previous.get(name)
        if before is None or before != reading.value:
            events.append(Event(name, ts, reading.value, before))
            previous[name] = reading.value
    return events


def availability_event(*, available: bool, was: bool | None, ts: int) -> Event | None:
    """The ``available`` event when reachability changed (None when it did not)."""
    if was is available:
        return None
    return Event(AVAILABLE, ts, 1.0 if available else 0.0, None if was is None else float(int(was)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """A command's outcome and a short reason."""

    outcome: CommandOutcome
    detail: str = ""


def check_command(
    *, profile: Profile, action: CommandAction, value: float | None
) -> Verdict | None:
    """Why a command cannot be run on a device of ``profile`` (None: it can be written)."""
    try:
        point = profile.command(action)
    except KeyError:
        return Verdict(CommandOutcome.REFUSED, f"model {profile.model} does not take {action}")
    if point.value is None:
        if value is None:
            return Verdict(CommandOutcome.REFUSED, f"{action} needs a value")
        if point.min is not None and value < point.min:
            return Verdict(CommandOutcome.REFUSED, f"{action} value {value:g} below {point.min:g}")
        if point.max is not None and value > point.max:
            return Verdict(CommandOutcome.REFUSED, f"{action} value {value:g} above {point.max:g}")
    return None


def command_value(*, profile: Profile, action: CommandAction, value: float | None) -> float:
    """The value written for a command: the profile's fixed value or the command's own."""
    point = profile.command(action)
    if point.value is not None:
        return point.value
    assert value is not None
    return value


def written_detail(*, point: Point, value: float) -> str:
    """Said in the result when the register cannot hold ``value`` exactly (dim 33.7 is written
    as 34 to a register of whole percent): what it holds now; empty when it holds ``value``."""
    written = decode_value(encode_value(value, point=point), point=point)
    if isinstance(written, float) and written != value:
        return f"wrote {written:g}, not {value:g}: the register holds steps of {point.scale:g}"
    return ""


def lockout_verdict(state: float | None) -> Verdict:
    """Outcome of a lockout from the controller's lockout_state (rule M6: applied only if safe)."""
    if state is None:
        return Verdict(CommandOutcome.DONE, "written; the controller reports no lockout state")
    if state == LockoutState.APPLIED:
        return Verdict(CommandOutcome.DONE, "out of service")
    if state == LockoutState.PENDING:
        return Verdict(
            CommandOutcome.PENDING_SAFETY,
            "controller applies it when the car is idle at a landing, doors open, empty",
        )
    return Verdict(CommandOutcome.FAILED, "the controller did not take the out-of-service request")


def pending_lockout_verdict(state: float | None) -> Verdict | None:
    """What became of a pending lockout, from a later poll (None: still pending)."""
    if state == LockoutState.APPLIED:
        return Verdict(CommandOutcome.DONE, "out of service")
    if state == LockoutState.NONE:
        return Verdict(CommandOutcome.FAILED, "the controller dropped the out-of-service request")
    return None
