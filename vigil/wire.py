"""Topic scheme and payload codec shared by the gateway (encode) and ingest (decode).

See docs/wire-format.md. Decoding is strict: it returns a typed message or a ``Rejected`` with
one ``Reason``, never raises on bad input, and never guesses.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

try:  # optional speed-up for ingest; the standard library decodes the same way
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

VERSION = 1
PREFIX = f"vigil/v{VERSION}"

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
METRIC_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_SEQ = 2**63 - 1
_E = TypeVar("_E", bound=StrEnum)
# 2000-01-01T00:00:00Z: no device of ours reports from before this.
MIN_TIMESTAMP_MS = 946_684_800_000


class Reason(StrEnum):
    """Why a message was rejected. Each has its own dead-letter reason."""

    BAD_TOPIC = "bad_topic"
    OVERSIZE = "oversize"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_VERSION = "unknown_version"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    BAD_VALUE = "bad_value"
    EMPTY_BATCH = "empty_batch"
    TOO_MANY_ITEMS = "too_many_items"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    DEVICE_MISMATCH = "device_mismatch"
    DUPLICATE_KEY = "duplicate_key"


class Channel(StrEnum):
    """The kinds of topic under ``vigil/v1``."""

    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATUS = "status"
    HEALTH = "health"
    COMMAND = "cmd"
    COMMAND_RESULT = "cmd-result"


DEVICE_CHANNELS = frozenset(
    {Channel.TELEMETRY, Channel.EVENTS, Channel.COMMAND, Channel.COMMAND_RESULT}
)


class CommandAction(StrEnum):
    """What the platform can ask a gateway to do to a device."""

    LOCKOUT = "lockout"
    RELEASE = "release"
    DIM = "dim"


class CommandOutcome(StrEnum):
    """What became of a command."""

    DONE = "done"
    PENDING_SAFETY = "pending_safety"
    REFUSED = "refused"
    FAILED = "failed"


class GatewayState(StrEnum):
    """Retained gateway status (``offline`` is the last will)."""

    ONLINE = "online"
    OFFLINE = "offline"


class GatewayEvent(StrEnum):
    """Something a gateway reports on its status topic (not retained) besides its state."""

    # the store-and-forward buffer was missing, empty or unreadable at start: what it held is
    # lost, and the gateway's messages carry a new epoch from now on
    BUFFER_LOST = "buffer_lost"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoder enforces."""

    max_payload_bytes: int = 256 * 1024
    max_items: int = 5_000
    max_future_ms: int = 5 * 60 * 1000
    # Store-and-forward may deliver data days late; older than this is refused.
    max_age_ms: int = 90 * 24 * 3600 * 1000


DEFAULT_LIMITS = Limits()


class Sample(NamedTuple):
    """One reading: metric, device timestamp (ms since epoch) and value.

    A named tuple rather than a frozen dataclass: ingest builds one per point, and a tuple is
    built in less than half the time."""

    metric: str
    ts: int
    value: float
    # False when the gateway flagged the value (e.g. outside the register's declared range).
    good: bool = True


@dataclass(frozen=True, slots=True)
class Event:
    """A transition seen at the edge: ``metric`` went from ``previous`` to ``value`` at ``ts``."""

    metric: str
    ts: int
    value: float | None
    previous: float | None = None


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """A batch of samples from one device."""

    gateway: str
    device: str
    seq: int
    samples: tuple[Sample, ...]
    # the gateway's buffer generation: (device, epoch, seq) is unique even when a lost buffer
    # restarts the sequence numbers (0: a gateway that does not say)
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Transitions from one device, published at once."""

    gateway: str
    device: str
    seq: int
    events: tuple[Event, ...]
    epoch: int = 0  # as TelemetryBatch.epoch


@dataclass(frozen=True, slots=True)
class Status:
    """Retained liveness of a gateway; with ``event``, a report that is not retained."""

    gateway: str
    state: GatewayState
    ts: int
    event: GatewayEvent | None = None
    detail: str = ""
    # the last will: the broker publishes it when the gateway vanishes, but its payload was
    # fixed when the gateway connected, so ``ts`` is the connect time; the receiver takes the
    # time it received the will as the time the gateway went offline
    will: bool = False


@dataclass(frozen=True, slots=True)
class Health:
    """Periodic gateway health figures."""

    gateway: str
    ts: int
    polls_per_s: float
    errors: int
    buffer_depth: int
    dropped: int = 0
    devices_unavailable: int = 0


@dataclass(frozen=True, slots=True)
class Command:
    """A command from the platform to a device behind a gateway."""

    gateway: str
    device: str
    command_id: str
    action: CommandAction
    ts: int
    value: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a gateway did with a command."""

    gateway: str
    device: str
    command_id: str
    outcome: CommandOutcome
    ts: int
    detail: str = ""


Message = TelemetryBatch | EventBatch | Status | Health | Command | CommandResult


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a payload could not be decoded."""

    reason: Reason
    detail: str = ""
    gateway: str | None = None
    device: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- topics -------------------------------------------------------------------------------------


def topic(channel: Channel, gateway: str, device: str | None = None) -> str:
    """The topic for a channel, gateway and (for device channels) device."""
    if channel in DEVICE_CHANNELS:
        if device is None:
            raise ValueError(f"{channel} topics need a device")
        return f"{PREFIX}/{channel}/{gateway}/{device}"
    return f"{PREFIX}/{channel}/{gateway}"


def subscription(channel: Channel, gateway: str = "+") -> str:
    """A wildcard filter for every device (or gateway) on a channel."""
    if channel in DEVICE_CHANNELS:
        return f"{PREFIX}/{channel}/{gateway}/+"
    return f"{PREFIX}/{channel}/{gateway}"


@dataclass(frozen=True, slots=True)
class Address:
    """What a topic names."""

    channel: Channel
    gateway: str
    device: str | None


def parse_topic(name: str) -> Address | Rejected:
    """Split a topic into channel, gateway and device, or say why it is not one of ours."""
    parts = name.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        return Rejected(Reason.BAD_TOPIC, f"not a {PREFIX}/... topic: {name!r}")
    try:
        channel = Channel(parts[2])
    except ValueError:
        return Rejected(Reason.BAD_TOPIC, f"unknown channel {parts[2]!r}")
    expected = 5 if channel in DEVICE_CHANNELS else 4
    if len(parts) != expected:
        return Rejected(Reason.BAD_TOPIC, f"{channel} topics have {expected} levels: {name!r}")
    for part in parts[3:]:
        if not ID_PATTERN.match(part):
            return Rejected(Reason.BAD_TOPIC, f"bad identifier {part!r} in topic")
    return Address(channel, parts[3], parts[4] if expected == 5 else None)


# -- encoding -----------------------------------------------------------------------------------


def encode(message: Message) -> tuple[str, bytes]:
    """Topic and compact JSON payload for a message."""
    body: dict[str, Any] = {"v": VERSION}
    match message:
        case TelemetryBatch():
            body["seq"] = message.seq
            if message.epoch:
                body["epoch"] = message.epoch
            body["samples"] = [_encode_sample(s) for s in message.samples]
            name = topic(Channel.TELEMETRY, message.gateway, message.device)
        case EventBatch():
            body["seq"] = message.seq
            if message.epoch:
                body["epoch"] = message.epoch
            body["events"] = [_encode_event(e) for e in message.events]
            name = topic(Channel.EVENTS, message.gateway, message.device)
        case Status():
            body.update(state=str(message.state), ts=message.ts)
            if message.event is not None:
                body["event"] = str(message.event)
                if message.detail:
                    body["detail"] = message.detail
            if message.will:
                body["will"] = True
            name = topic(Channel.STATUS, message.gateway)
        case Health():
            body.update(
                ts=message.ts,
                polls_per_s=message.polls_per_s,
                errors=message.errors,
                buffer_depth=message.buffer_depth,
                dropped=message.dropped,
                devices_unavailable=message.devices_unavailable,
            )
            name = topic(Channel.HEALTH, message.gateway)
        case Command():
            body.update(id=message.command_id, action=str(message.action), ts=message.ts)
            if message.value is not None:
                body["value"] = message.value
            if message.reason:
                body["reason"] = message.reason
            name = topic(Channel.COMMAND, message.gateway, message.device)
        case CommandResult():
            body.update(id=message.command_id, outcome=str(message.outcome), ts=message.ts)
            if message.detail:
                body["detail"] = message.detail
            name = topic(Channel.COMMAND_RESULT, message.gateway, message.device)
        case _:
            raise TypeError(f"not a wire message: {message!r}")
    return name, json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _encode_sample(sample: Sample) -> dict[str, Any]:
    out: dict[str, Any] = {"m": sample.metric, "t": sample.ts, "v": sample.value}
    if not sample.good:
        out["q"] = "bad"
    return out


def _encode_event(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"m": event.metric, "t": event.ts, "v": event.value}
    if event.previous is not None:
        out["p"] = event.previous
    return out


# -- decoding -----------------------------------------------------------------------------------


class _Invalid(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _refuse_constant(name: str) -> Any:
    raise _Invalid(Reason.NON_FINITE, f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Invalid(Reason.NON_FINITE, f"{text[:40]} is beyond a double")
    return value


# An integer with more digits than any value or timestamp of the wire format can have.
_MAX_INT_DIGITS = 19


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Invalid(Reason.BAD_VALUE, f"an integer of {len(text)} digits is out of range")
    return int(text)


def _no_duplicate_keys(payload: bytes, keys: int) -> None:
    """Refuse an object with a key given twice (JSON parsers keep the last one silently).

    Every key is followed by a colon; the caller counts the keys it parsed, where no string
    holds a colon, so more colons in the payload than keys means a key given twice.
    """
    if payload.count(b":") > keys:
        raise _Invalid(Reason.DUPLICATE_KEY, "a key appears twice in one object")


def _keys_and_string_colons(value: Any) -> tuple[int, int]:
    """Keys in ``value`` and colons inside its strings (keys and values)."""
    keys = colons = 0
    stack = [value]
    while stack:
        item = stack.pop()
        children = item.items() if type(item) is dict else enumerate(item)
        if type(item) is dict:
            keys += len(item)
        for key, child in children:
            if type(key) is str:
                colons += key.count(":")
            if type(child) in (dict, list):
                stack.append(child)
            elif type(child) is str:
                colons += child.count(":")
    return keys, colons


def decode(
    name: str, payload: bytes, *, now_ms: int, limits: Limits = DEFAULT_LIMITS
) -> Message | Rejected:
    """Decode a payload received on topic ``name``; strict, never raises on bad input."""
    address = parse_topic(name)
    if isinstance(address, Rejected):
        return address
    try:
        return _decode(address, payload, now_ms, limits)
    except _Invalid as bad:
        return Rejected(bad.reason, bad.detail, address.gateway, address.device)
    except Exception as exc:
        # refusal: a receiver never stops on bad input (an overflowing number, a deep nest, ...)
        detail = f"undecodable: {type(exc).__name__}: {exc}"[:500]
        return Rejected(Reason.BAD_VALUE, detail, address.gateway, address.device)


def _decode(address: Address, payload: bytes, now_ms: int, limits: Limits) -> Message:
    if len(payload) > limits.max_payload_bytes:
        raise _Invalid(Reason.OVERSIZE, f"{len(payload)} bytes > limit {limits.max_payload_bytes}")
    body = _parse(payload)
    if not isinstance(body, dict):
        raise _Invalid(Reason.NOT_AN_OBJECT, f"payload is a JSON {type(body).__name__}")
    if address.channel not in (Channel.TELEMETRY, Channel.EVENTS):
        # small messages: count keys and the colons inside strings the slow, general way
        keys, in_strings = _keys_and_string_colons(body)
        _no_duplicate_keys(payload, keys + in_strings)
    version = body.get("v")
    if version is None:
        raise _Invalid(Reason.MISSING_FIELD, "missing field 'v' (schema version)")
    if type(version) is not int or version != VERSION:  # 1.0 and true are not version 1
        raise _Invalid(Reason.UNKNOWN_VERSION, f"schema version {version!r}, expected {VERSION}")
    ts_check = _TimeCheck(now_ms, limits)
    gateway, device = address.gateway, address.device or ""
    match address.channel:
        case Channel.TELEMETRY:
            _only(body, {"v", "seq", "epoch", "samples"}, "message")
            items = _items(body, "samples", limits)
            batch = TelemetryBatch(
                gateway,
                device,
                _seq(body),
                _decode_samples(items, ts_check),
                _count(body, "epoch", default=0),
            )
            # validated: no string holds a colon, so every colon is a key's
            _no_duplicate_keys(payload, len(body) + sum(map(len, items)))
            return batch
        case Channel.EVENTS:
            _only(body, {"v", "seq", "epoch", "events"}, "message")
            items = _items(body, "events", limits)
            events = tuple(_decode_event(item, i, ts_check) for i, item in enumerate(items))
            _no_duplicate_keys(payload, len(body) + sum(map(len, items)))
            return EventBatch(gateway, device, _seq(body), events, _count(body, "epoch", default=0))
        case Channel.STATUS:
            _only(body, {"v", "state", "ts", "event", "detail", "will"}, "message")
            state = _enum(body, "state", GatewayState)
            event = _enum(body, "event", GatewayEvent) if "event" in body else None
            will = body.get("will", False)
            if type(will) is not bool:
                raise _Invalid(Reason.WRONG_TYPE, "'will' must be true or false")
            return Status(
                gateway,
                state,
                ts_check(_int(body, "ts"), "ts"),
                event,
                _str(body, "detail", default=""),
                will,
            )
        case Channel.HEALTH:
            _only(
                body,
                {
                    "v",
                    "ts",
                    "polls_per_s",
                    "errors",
                    "buffer_depth",
                    "dropped",
                    "devices_unavailable",
                },
                "message",
            )
            return Health(
                gateway,
                ts_check(_int(body, "ts"), "ts"),
                _number(body, "polls_per_s"),
                _count(body, "errors"),
                _count(body, "buffer_depth"),
                _count(body, "dropped", default=0),
                _count(body, "devices_unavailable", default=0),
            )
        case Channel.COMMAND:
            _only(body, {"v", "id", "action", "ts", "value", "reason"}, "message")
            value = _number(body, "value") if "value" in body else None
            return Command(
                gateway,
                device,
                _ident(body, "id"),
                _enum(body, "action", CommandAction),
                ts_check(_int(body, "ts"), "ts"),
                value,
                _str(body, "reason", default=""),
            )
        case Channel.COMMAND_RESULT:
            _only(body, {"v", "id", "outcome", "ts", "detail"}, "message")
            return CommandResult(
                gateway,
                device,
                _ident(body, "id"),
                _enum(body, "outcome", CommandOutcome),
                ts_check(_int(body, "ts"), "ts"),
                _str(body, "detail", default=""),
            )
    raise _Invalid(Reason.BAD_TOPIC, f"unhandled channel {address.channel}")  # pragma: no cover


def _parse(payload: bytes) -> Any:
    """Parse strict JSON with orjson; the standard library only says why a payload is refused.

    What orjson refuses is refused (a byte-order mark, a lone surrogate, a number beyond a
    double), even where the lenient standard parser would accept it.
    """
    refusal: str | None = None
    if orjson is not None:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            refusal = str(exc)  # NaN and Infinity get their own reason below
    if payload[:3] == b"\xef\xbb\xbf":
        raise _Invalid(Reason.MALFORMED_JSON, "a UTF-8 byte-order mark is not allowed")
    try:
        parsed = json.loads(
            payload,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except _Invalid:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Invalid(Reason.MALFORMED_JSON, str(exc)) from None
    except RecursionError:
        raise _Invalid(Reason.MALFORMED_JSON, "nesting too deep") from None
    if refusal is not None:
        raise _Invalid(Reason.MALFORMED_JSON, refusal)
    return parsed


class _TimeCheck:
    __slots__ = ("newest", "oldest")

    def __init__(self, now_ms: int, limits: Limits) -> None:
        self.newest = now_ms + limits.max_future_ms
        self.oldest = max(MIN_TIMESTAMP_MS, now_ms - limits.max_age_ms)

    def __call__(self, ts: int, where: str) -> int:
        if ts > self.newest:
            raise _Invalid(
                Reason.FUTURE_TIMESTAMP, f"{where}={ts} is ahead of the receiver's clock"
            )
        if ts < self.oldest:
            raise _Invalid(Reason.STALE_TIMESTAMP, f"{where}={ts} is older than accepted")
        return ts


def _only(body: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = body.keys() - allowed
    if unknown:
        raise _Invalid(Reason.UNKNOWN_FIELD, f"unknown {what} field(s): {sorted(unknown)}")


def _get(body: dict[str, Any], key: str) -> Any:
    try:
        return body[key]
    except KeyError:
        raise _Invalid(Reason.MISSING_FIELD, f"missing field {key!r}") from None


def _int(body: dict[str, Any], key: str) -> int:
    value = _get(body, key)
    if type(value) is not int:
        if key == "ts":
            _refuse_huge_timestamp(value, key)
        raise _Invalid(Reason.WRONG_TYPE, f"{key!r} must be an integer, got {_type(value)}")
    return value


def _count(body: dict[str, Any], key: str, default: int | None = None) -> int:
    if default is not None and key not in body:
        return default
    value = _int(body, key)
    if value < 0:
        raise _Invalid(Reason.BAD_VALUE, f"{key!r} must not be negative")
    return value


def _seq(body: dict[str, Any]) -> int:
    value = _int(body, "seq")
    if not 0 <= value <= MAX_SEQ:
        raise _Invalid(Reason.BAD_VALUE, f"'seq' out of range: {value}")
    return value


def _number(body: dict[str, Any], key: str) -> float:
    value = _get(body, key)
    if type(value) is int:
        return float(value)
    if type(value) is not float:
        raise _Invalid(Reason.WRONG_TYPE, f"{key!r} must be a number, got {_type(value)}")
    if not math.isfinite(value):
        raise _Invalid(Reason.NON_FINITE, f"{key!r} is not finite")
    return value


def _str(body: dict[str, Any], key: str, default: str | None = None) -> str:
    if default is not None and key not in body:
        return default
    value = _get(body, key)
    if not isinstance(value, str):
        raise _Invalid(Reason.WRONG_TYPE, f"{key!r} must be a string, got {_type(value)}")
    if len(value) > 1000:
        raise _Invalid(Reason.BAD_VALUE, f"{key!r} is longer than 1000 characters")
    return value


def _ident(body: dict[str, Any], key: str) -> str:
    value = _str(body, key)
    if not ID_PATTERN.match(value):
        raise _Invalid(Reason.BAD_VALUE, f"{key!r} is not a valid identifier: {value!r}")
    return value


def _enum(body: dict[str, Any], key: str, kind: type[_E]) -> _E:
    value = _str(body, key)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(kind)
        raise _Invalid(Reason.BAD_VALUE, f"{key!r} must be one of {allowed}: {value!r}") from None


def _items(body: dict[str, Any], key: str, limits: Limits) -> list[Any]:
    items = _get(body, key)
    if not isinstance(items, list):
        raise _Invalid(Reason.WRONG_TYPE, f"{key!r} must be an array, got {_type(items)}")
    if not items:
        raise _Invalid(Reason.EMPTY_BATCH, f"{key!r} is empty")
    if len(items) > limits.max_items:
        raise _Invalid(Reason.TOO_MANY_ITEMS, f"{len(items)} {key} > limit {limits.max_items}")
    return items


def _item_fields(item: Any, index: int, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _Invalid(Reason.WRONG_TYPE, f"{what}[{index}] must be an object, got {_type(item)}")
    if not item.keys() <= allowed:
        unknown = sorted(item.keys() - allowed)
        raise _Invalid(Reason.UNKNOWN_FIELD, f"{what}[{index}] has unknown field(s) {unknown}")
    return item


def _metric_name(item: dict[str, Any], index: int, what: str) -> str:
    name = item.get("m")
    if name is None:
        raise _Invalid(Reason.MISSING_FIELD, f"{what}[{index}] is missing 'm'")
    if not isinstance(name, str):
        raise _Invalid(Reason.WRONG_TYPE, f"{what}[{index}].m must be a string")
    if not METRIC_PATTERN.match(name):
        raise _Invalid(Reason.BAD_VALUE, f"{what}[{index}].m is not a metric name: {name!r}")
    return name


def _item_ts(item: dict[str, Any], index: int, what: str, check: _TimeCheck) -> int:
    if "t" not in item:
        raise _Invalid(Reason.MISSING_FIELD, f"{what}[{index}] is missing 't'")
    ts = item["t"]
    if type(ts) is not int:
        _refuse_huge_timestamp(ts, f"{what}[{index}].t")
        raise _Invalid(Reason.WRONG_TYPE, f"{what}[{index}].t must be integer milliseconds")
    return check(ts, f"{what}[{index}].t")


def _refuse_huge_timestamp(value: Any, where: str) -> None:
    """An integer timestamp beyond 64 bits (which the JSON parser reads as a float) is a
    timestamp out of range, not a wrong type."""
    if type(value) is float and math.isfinite(value) and value.is_integer() and abs(value) >= 2**63:
        reason = Reason.FUTURE_TIMESTAMP if value > 0 else Reason.STALE_TIMESTAMP
        raise _Invalid(reason, f"{where} is beyond any timestamp")


def _item_value(item: dict[str, Any], key: str, where: str, nullable: bool) -> float | None:
    if key not in item:
        if nullable and key == "p":
            return None
        raise _Invalid(Reason.MISSING_FIELD, f"{where} is missing {key!r}")
    value = item[key]
    if value is None and nullable:
        return None
    if type(value) is int:
        return float(value)
    if type(value) is not float:
        raise _Invalid(Reason.WRONG_TYPE, f"{where}.{key} must be a number, got {_type(value)}")
    if not math.isfinite(value):
        raise _Invalid(Reason.NON_FINITE, f"{where}.{key} is not finite")
    return value


_SAMPLE_FIELDS = frozenset({"m", "t", "v", "q"})
_EVENT_FIELDS = frozenset({"m", "t", "v", "p"})


# Metric names already checked against METRIC_PATTERN (a fleet has a few hundred at most).
_known_metrics: set[str] = set()
_KNOWN_METRICS_MAX = 10_000


def _decode_samples(items: list[Any], check: _TimeCheck) -> tuple[Sample, ...]:
    """Decode samples; the common well-formed case is checked inline (ingest's hot path)."""
    out: list[Sample] = []
    known, newest, oldest = _known_metrics, check.newest, check.oldest
    for index, item in enumerate(items):
        if type(item) is dict and len(item) == 3:
            name, ts, value = item.get("m"), item.get("t"), item.get("v")
            if (
                type(name) is str
                and (name in known or _remember_metric(name))
                and type(ts) is int
                and oldest <= ts <= newest
            ):
                if type(value) is float and math.isfinite(value):
                    out.append(Sample(name, ts, value))
                    continue
                if type(value) is int:
                    out.append(Sample(name, ts, float(value)))
                    continue
        # Anything unusual takes the full path, which names the reason precisely.
        out.append(_decode_sample(item, index, check))
    return tuple(out)


def _remember_metric(name: str) -> bool:
    if not METRIC_PATTERN.match(name):
        return False
    if len(_known_metrics) < _KNOWN_METRICS_MAX:
        _known_metrics.add(name)
    return True


def _decode_sample(item: Any, index: int, check: _TimeCheck) -> Sample:
    fields = _item_fields(item, index, _SAMPLE_FIELDS, "samples")
    name = _metric_name(fields, index, "samples")
    ts = _item_ts(fields, index, "samples", check)
    value = _item_value(fields, "v", f"samples[{index}]", nullable=False)
    quality = fields.get("q", "good")
    if quality not in ("good", "bad"):
        raise _Invalid(Reason.BAD_VALUE, f"samples[{index}].q must be 'good' or 'bad'")
    assert value is not None
    return Sample(name, ts, value, quality == "good")


def _decode_event(item: Any, index: int, check: _TimeCheck) -> Event:
    fields = _item_fields(item, index, _EVENT_FIELDS, "events")
    name = _metric_name(fields, index, "events")
    ts = _item_ts(fields, index, "events", check)
    value = _item_value(fields, "v", f"events[{index}]", nullable=True)
    previous = _item_value(fields, "p", f"events[{index}]", nullable=True)
    return Event(name, ts, value, previous)


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
