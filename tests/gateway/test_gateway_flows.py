"""The gateway's decisions, without I/O: decoding, report strategies, edges, command outcomes."""

from __future__ import annotations

from gateway.flows import (
    Reading,
    ReportState,
    availability_event,
    check_command,
    decode_poll,
    detect_events,
    edge_metrics,
    lockout_verdict,
    pending_lockout_verdict,
    select_samples,
)
from gateway.models import Device, ReportStrategy
from vigil.catalog import ELEVATOR_EVENT_METRICS
from vigil.profiles import builtin_profile, encode_value, parse_profile, profile_reads
from vigil.wire import CommandAction, CommandOutcome, Event, Sample

METER = builtin_profile("sdm630")
LIFT = builtin_profile("lift-controller")
POLE = builtin_profile("street-light")


def device(profile=METER, *, report=ReportStrategy.PERIODIC, interval=1.0, deadband=0.0):
    return Device(
        id="d1",
        profile=profile,
        host="127.0.0.1",
        port=502,
        unit=1,
        poll_s=1.0,
        timeout_s=1.0,
        report=report,
        report_interval_s=interval,
        deadbands={m: deadband for m in profile.metrics},
    )


def readings(**values: float) -> dict[str, Reading]:
    return {name: Reading(name, value, True) for name, value in values.items()}


def test_decode_poll_flags_out_of_range_and_drops_non_finite():
    profile = parse_profile(
        {
            "model": "t",
            "kind": "energy_meter",
            "registers": [
                {
                    "metric": "voltage_l1",
                    "table": 4,
                    "address": 0,
                    "type": "float32",
                    "min": 0,
                    "max": 300,
                },
                {"metric": "voltage_l2", "table": 4, "address": 2, "type": "float32"},
                {"metric": "frequency", "table": 4, "address": 4, "type": "int16", "scale": 0.01},
            ],
        }
    )
    (block,) = profile_reads(profile)
    words = [
        *encode_value(400.0, point=profile.registers[0]),  # outside 0..300
        *encode_value(float("nan"), point=profile.registers[1]),
        *encode_value(50.02, point=profile.registers[2]),
    ]
    decoded = decode_poll(profile=profile, blocks=[(block, words)])
    assert decoded.readings["voltage_l1"] == Reading("voltage_l1", 400.0, False)
    assert (
        decoded.readings["frequency"].good
        and abs(decoded.readings["frequency"].value - 50.02) < 1e-9
    )
    assert decoded.unusable == ("voltage_l2",)


def test_periodic_reports_everything_every_interval():
    state = ReportState()
    dev = device(interval=10.0)
    first = select_samples(device=dev, readings=readings(voltage_l1=230.0), ts=0, state=state)
    assert first == [Sample("voltage_l1", 0, 230.0)]
    assert (
        select_samples(device=dev, readings=readings(voltage_l1=231.0), ts=5000, state=state) == []
    )
    assert select_samples(
        device=dev, readings=readings(voltage_l1=231.0), ts=10_000, state=state
    ) == [Sample("voltage_l1", 10_000, 231.0)]


def test_on_change_honours_deadbands_and_quality():
    state = ReportState()
    dev = device(report=ReportStrategy.CHANGE, deadband=1.0)
    assert (
        len(select_samples(device=dev, readings=readings(voltage_l1=230.0), ts=0, state=state)) == 1
    )
    # 0.6 + 0.6 drift: each step is inside the deadband, measured from the last *sent* value.
    assert select_samples(device=dev, readings=readings(voltage_l1=230.6), ts=1, state=state) == []
    assert select_samples(device=dev, readings=readings(voltage_l1=231.2), ts=2, state=state) == [
        Sample("voltage_l1", 2, 231.2)
    ]
    bad = {"voltage_l1": Reading("voltage_l1", 231.2, False)}
    assert select_samples(device=dev, readings=bad, ts=3, state=state) == [
        Sample("voltage_l1", 3, 231.2, good=False)
    ]


def test_both_sends_changes_and_a_periodic_heartbeat():
    state = ReportState()
    dev = device(report=ReportStrategy.BOTH, interval=60.0, deadband=5.0)
    values = readings(voltage_l1=230.0, frequency=50.0)
    assert len(select_samples(device=dev, readings=values, ts=0, state=state)) == 2
    moved = readings(voltage_l1=240.0, frequency=50.0)
    assert [s.metric for s in select_samples(device=dev, readings=moved, ts=1000, state=state)] == [
        "voltage_l1"
    ]
    assert len(select_samples(device=dev, readings=moved, ts=60_000, state=state)) == 2


def test_state_metrics_ignore_deadbands():
    dev = device(LIFT, report=ReportStrategy.CHANGE, deadband=10.0)
    assert dev.deadband("door_state") == 0.0 and dev.deadband("trip_count") == 10.0


def test_edges_of_elevator_state_metrics_only():
    assert edge_metrics(LIFT) == ELEVATOR_EVENT_METRICS
    assert edge_metrics(METER) == frozenset()
    previous: dict[str, float] = {}
    first = detect_events(
        watched=edge_metrics(LIFT),
        readings=readings(door_state=0, floor=1),
        previous=previous,
        ts=1,
    )
    assert first == [Event("door_state", 1, 0.0, None)]  # floor is not an edge metric
    assert (
        detect_events(
            watched=edge_metrics(LIFT), readings=readings(door_state=0), previous=previous, ts=2
        )
        == []
    )
    flagged = {"door_state": Reading("door_state", 9.0, False)}
    assert (
        detect_events(watched=edge_metrics(LIFT), readings=flagged, previous=previous, ts=3) == []
    )  # a flagged value is not a state the car is in
    assert detect_events(
        watched=edge_metrics(LIFT), readings=readings(door_state=2), previous=previous, ts=4
    ) == [Event("door_state", 4, 2.0, 0.0)]


def test_availability_is_an_edge_too():
    assert availability_event(available=True, was=None, ts=1) == Event("available", 1, 1.0, None)
    assert availability_event(available=True, was=True, ts=2) is None
    assert availability_event(available=False, was=True, ts=3) == Event("available", 3, 0.0, 1.0)
    assert availability_event(available=False, was=False, ts=4) is None
    assert availability_event(available=False, was=None, ts=5) == Event("available", 5, 0.0, None)


def test_command_checks_and_lockout_outcomes():
    assert check_command(profile=LIFT, action=CommandAction.LOCKOUT, value=None) is None
    assert check_command(profile=LIFT, action=CommandAction.DIM, value=5).outcome is (
        CommandOutcome.REFUSED
    )
    assert check_command(profile=POLE, action=CommandAction.DIM, value=None).outcome is (
        CommandOutcome.REFUSED
    )
    assert "above 100" in check_command(profile=POLE, action=CommandAction.DIM, value=101).detail
    assert check_command(profile=POLE, action=CommandAction.DIM, value=100) is None
    assert lockout_verdict(2).outcome is CommandOutcome.DONE
    assert lockout_verdict(1).outcome is CommandOutcome.PENDING_SAFETY
    assert lockout_verdict(0).outcome is CommandOutcome.FAILED
    assert pending_lockout_verdict(1) is None
    assert pending_lockout_verdict(2).outcome is CommandOutcome.DONE
    assert pending_lockout_verdict(0).outcome is CommandOutcome.FAILED


def test_a_late_poll_does_not_swallow_the_next_report():
    # gateway issue 12, item 6: the on-time poll after a late one published nothing
    state = ReportState()
    dev = device(interval=1.0)
    published = [
        ts
        for ts in (0, 1600, 2000, 3000, 3990, 5000, 9000, 10_000)
        if select_samples(device=dev, readings=readings(voltage_l1=230.0), ts=ts, state=state)
    ]
    assert published == [0, 1600, 2000, 3000, 3990, 5000, 9000, 10_000]
    # a report interval of 10 polls keeps its rate whatever the polls' lateness
    state, dev = ReportState(), device(interval=10.0)
    sent = [
        ts
        for ts in (0, 5000, 10_700, 11_000, 19_600, 20_000, 30_000)
        if select_samples(device=dev, readings=readings(voltage_l1=230.0), ts=ts, state=state)
    ]
    assert sent == [0, 10_700, 19_600, 30_000]
