import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil import wire
from vigil.wire import (
    Command,
    CommandAction,
    CommandOutcome,
    CommandResult,
    Event,
    EventBatch,
    GatewayState,
    Health,
    Reason,
    Rejected,
    Sample,
    Status,
    TelemetryBatch,
)

NOW = 1_767_600_000_000  # 2026-01-05
TOPIC = "vigil/v1/telemetry/gw1/lift-7"


def payload(**body) -> bytes:
    base = {"v": 1, "seq": 1, "samples": [{"m": "floor", "t": NOW, "v": 3}]}
    base.update(body)
    return json.dumps(base).encode()


def reject(name: str, raw: bytes, **kw) -> Rejected:
    result = wire.decode(name, raw, now_ms=NOW, **kw)
    assert isinstance(result, Rejected), result
    return result


def test_a_valid_batch_decodes():
    result = wire.decode(TOPIC, payload(), now_ms=NOW)
    assert result == TelemetryBatch("gw1", "lift-7", 1, (Sample("floor", NOW, 3.0),))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"v": 1, "seq": 1, "samples": [', Reason.MALFORMED_JSON),
        (b"\xff\xfe not utf-8", Reason.MALFORMED_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (payload(seq="1"), Reason.WRONG_TYPE),
        (payload(samples=[{"m": "floor", "t": NOW, "v": "3"}]), Reason.WRONG_TYPE),
        (payload(samples=[{"m": "floor", "t": NOW, "v": True}]), Reason.WRONG_TYPE),
        (payload(samples=[{"m": "floor", "t": float(NOW), "v": 3}]), Reason.WRONG_TYPE),
        (payload(samples={"m": "floor"}), Reason.WRONG_TYPE),
        (
            b'{"v": 1, "seq": 1, "samples": [{"m": "floor", "t": 1767600000000, "v": NaN}]}',
            Reason.NON_FINITE,
        ),
        (
            b'{"v": 1, "seq": 1, "samples": [{"m": "floor", "t": 1767600000000, "v": Infinity}]}',
            Reason.NON_FINITE,
        ),
        (
            b'{"v": 1, "seq": 1, "samples": [{"m": "floor", "t": 1767600000000, "v": -Infinity}]}',
            Reason.NON_FINITE,
        ),
        (
            b'{"v": 1, "seq": 1, "samples": [{"m": "floor", "t": 1767600000000, "v": 1e999}]}',
            Reason.NON_FINITE,
        ),
        (payload(v=2), Reason.UNKNOWN_VERSION),
        (payload(v="1"), Reason.UNKNOWN_VERSION),
        (payload(samples=[{"m": "floor", "t": NOW + 3_600_000, "v": 1}]), Reason.FUTURE_TIMESTAMP),
        (payload(samples=[{"m": "floor", "t": 1000, "v": 1}]), Reason.STALE_TIMESTAMP),
        (payload(samples=[]), Reason.EMPTY_BATCH),
        (payload(extra=1), Reason.UNKNOWN_FIELD),
        (
            json.dumps({"v": 1, "samples": [{"m": "a", "t": NOW, "v": 1}]}).encode(),
            Reason.MISSING_FIELD,
        ),
        (json.dumps({"seq": 1, "samples": []}).encode(), Reason.MISSING_FIELD),
        (payload(samples=[{"m": "Bad Name", "t": NOW, "v": 1}]), Reason.BAD_VALUE),
        (payload(seq=-1), Reason.BAD_VALUE),
        # ingest issue item 3: strictness as documented
        (b"\xef\xbb\xbf" + payload(), Reason.MALFORMED_JSON),  # a UTF-8 byte-order mark
        (payload(v=1.0), Reason.UNKNOWN_VERSION),
        (payload()[:-1] + b', "seq": 2}', Reason.DUPLICATE_KEY),
        (
            b'{"v": 1, "seq": 1, "samples": [{"m": "floor", "t": 1767600000000, "v": 1, "v": 2}]}',
            Reason.DUPLICATE_KEY,
        ),
        (
            b'{"v": 1, "seq": 1, "samples": [{"m": "floor", "t": 9999999999999999999999, "v": 1}]}',
            Reason.FUTURE_TIMESTAMP,  # an integer beyond range is a timestamp error
        ),
    ],
)
def test_bad_payloads_are_rejected_with_their_own_reason(raw, reason):
    result = reject(TOPIC, raw)
    assert result.reason is reason
    assert result.detail
    assert (result.gateway, result.device) == ("gw1", "lift-7")


def test_the_required_rejections_all_have_distinct_reasons():
    reasons = {
        reject(TOPIC, b"{not json").reason,
        reject(TOPIC, payload(seq="one")).reason,
        reject(TOPIC, b'{"v":1,"seq":1,"samples":[{"m":"a","t":1767600000000,"v":NaN}]}').reason,
        reject(TOPIC, payload(v=99)).reason,
        reject(TOPIC, b"{" + b" " * 300_000 + b"}").reason,
        reject(TOPIC, payload(samples=[{"m": "a", "t": NOW + 10**9, "v": 1}])).reason,
    }
    assert reasons == {
        Reason.MALFORMED_JSON,
        Reason.WRONG_TYPE,
        Reason.NON_FINITE,
        Reason.UNKNOWN_VERSION,
        Reason.OVERSIZE,
        Reason.FUTURE_TIMESTAMP,
    }


def test_oversize_is_checked_before_parsing():
    limits = wire.Limits(max_payload_bytes=100)
    result = reject(TOPIC, payload(samples=[{"m": "a", "t": NOW, "v": 1}] * 10), limits=limits)
    assert result.reason is Reason.OVERSIZE


def test_too_many_items():
    limits = wire.Limits(max_items=2)
    result = reject(TOPIC, payload(samples=[{"m": "a", "t": NOW, "v": 1}] * 3), limits=limits)
    assert result.reason is Reason.TOO_MANY_ITEMS


@pytest.mark.parametrize(
    "name",
    [
        "vigil/v2/telemetry/gw/dev",
        "other/v1/telemetry/gw/dev",
        "vigil/v1/telemetry/gw",
        "vigil/v1/telemetry/gw/dev/extra",
        "vigil/v1/weather/gw/dev",
        "vigil/v1/telemetry/gw/b@d",
    ],
)
def test_bad_topics(name):
    assert reject(name, payload()).reason is Reason.BAD_TOPIC


ids = st.from_regex(wire.ID_PATTERN, fullmatch=True)
metrics = st.from_regex(wire.METRIC_PATTERN, fullmatch=True)
timestamps = st.integers(min_value=NOW - 80 * 24 * 3600 * 1000, max_value=NOW + 60_000)
values = st.floats(allow_nan=False, allow_infinity=False)
samples = st.builds(Sample, metrics, timestamps, values, st.booleans())
events = st.builds(Event, metrics, timestamps, st.none() | values, st.none() | values)
seqs = st.integers(min_value=0, max_value=wire.MAX_SEQ)
texts = st.text(max_size=50)

messages = st.one_of(
    st.builds(
        TelemetryBatch, ids, ids, seqs, st.lists(samples, min_size=1, max_size=20).map(tuple)
    ),
    st.builds(EventBatch, ids, ids, seqs, st.lists(events, min_size=1, max_size=20).map(tuple)),
    st.builds(Status, ids, st.sampled_from(GatewayState), timestamps),
    st.builds(
        Health,
        ids,
        timestamps,
        st.floats(min_value=0, max_value=1e6),
        st.integers(0, 10**9),
        st.integers(0, 10**9),
        st.integers(0, 10**9),
        st.integers(0, 10**6),
    ),
    st.builds(
        Command,
        ids,
        ids,
        ids,
        st.sampled_from(CommandAction),
        timestamps,
        st.none() | values,
        texts,
    ),
    st.builds(CommandResult, ids, ids, ids, st.sampled_from(CommandOutcome), timestamps, texts),
)


@given(messages)
def test_decode_of_encode_is_identity(message):
    name, raw = wire.encode(message)
    assert wire.decode(name, raw, now_ms=NOW) == message


def test_int_values_decode_as_floats_and_round_trip():
    name, raw = wire.encode(TelemetryBatch("g", "d", 5, (Sample("floor", NOW, 3.0),)))
    assert b'"v":3.0' in raw
    assert wire.decode(name, raw, now_ms=NOW).samples[0].value == 3.0


def test_topics_and_subscriptions():
    assert wire.topic(wire.Channel.EVENTS, "gw", "d1") == "vigil/v1/events/gw/d1"
    assert wire.topic(wire.Channel.STATUS, "gw") == "vigil/v1/status/gw"
    assert wire.subscription(wire.Channel.TELEMETRY) == "vigil/v1/telemetry/+/+"
    with pytest.raises(ValueError):
        wire.topic(wire.Channel.COMMAND, "gw")


def test_fast_and_full_paths_agree_on_every_sample_shape():
    """Ingest's inline check and the full decoder accept and refuse the same samples."""
    good = [{"m": "floor", "t": NOW, "v": 3}, {"m": "floor", "t": NOW - 1, "v": 2.5}]
    decoded = wire.decode(TOPIC, payload(samples=good), now_ms=NOW)
    assert decoded.samples == (Sample("floor", NOW, 3.0), Sample("floor", NOW - 1, 2.5))
    odd = [
        ({"m": "floor", "t": NOW, "x": 1}, Reason.UNKNOWN_FIELD),
        ({"m": ["floor"], "t": NOW, "v": 1}, Reason.WRONG_TYPE),
        ({"m": "Floor", "t": NOW, "v": 1}, Reason.BAD_VALUE),
        ({"m": "floor", "t": True, "v": 1}, Reason.WRONG_TYPE),
        ({"m": "floor", "t": NOW, "v": False}, Reason.WRONG_TYPE),
        ({"m": "floor", "t": NOW, "v": None}, Reason.WRONG_TYPE),
        ({"m": "floor", "t": NOW + 10**8, "v": 1}, Reason.FUTURE_TIMESTAMP),
    ]
    for sample, reason in odd:
        assert reject(TOPIC, payload(samples=[*good, sample])).reason is reason, sample


def test_a_key_given_twice_in_a_small_message_is_refused_but_colons_in_text_are_fine():
    # ingest issue item 3: JSON parsers keep the last of two equal keys silently
    topic = "vigil/v1/cmd-result/gw1/lift-7"
    fine = b'{"v":1,"id":"c-1","outcome":"done","ts":1767600000000,"detail":"a:b:c"}'
    assert not isinstance(wire.decode(topic, fine, now_ms=NOW), wire.Rejected)
    twice = b'{"v":1,"id":"c-1","outcome":"done","outcome":"failed","ts":1767600000000}'
    assert reject(topic, twice).reason is Reason.DUPLICATE_KEY
