"""Elevator edges as events, and commands (lockout, release, dim) on simulated controllers."""

from __future__ import annotations

import asyncio
import json

import paho.mqtt.publish as publish

from gateway.flows import edge_metrics
from tests.gateway.conftest import first_polls, fleet_config, running, tick
from vigil.catalog import CarStatus, DoorState, LockoutState
from vigil.wire import (
    Command,
    CommandAction,
    CommandOutcome,
    CommandResult,
    EventBatch,
    TelemetryBatch,
    encode,
)


def edges(collector, device_id):
    """(metric, ts, value, previous) of every event of the device except availability."""
    return [
        (e.metric, e.ts, e.value, e.previous)
        for b in collector.of(EventBatch)
        if b.device == device_id
        for e in b.events
        if e.metric != "available"
    ]


async def send(url: str, command: Command, *, retain: bool = False) -> None:
    """Publish a command as the platform does (QoS 1)."""
    topic, payload = encode(command)
    await publish_raw(url, topic, payload, retain=retain)


async def publish_raw(url: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    await asyncio.to_thread(
        publish.single, topic, payload, qos=1, retain=retain, hostname=host, port=int(port)
    )


def results(collector, command_id):
    """Outcomes published for one command id, in arrival order."""
    return [r for r in collector.of(CommandResult) if r.command_id == command_id]


async def test_elevator_transitions_arrive_as_events_within_one_poll(
    sim_elevator, clock, mqtt_url, unique_id, tmp_path, collect
):
    lift = sim_elevator.device_id
    config = fleet_config(
        tmp_path,
        gateway_id=unique_id,
        mqtt_url=mqtt_url,
        placements=[sim_elevator.placement],
        report_interval_s=3600,  # telemetry hourly: events must not wait for it
    )
    watched = edge_metrics(config.devices[0].profile)
    collector = await collect(mqtt_url, f"vigil/v1/+/{unique_id}/+", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        before = sim_elevator.values()
        # The first poll reports the state it found (no previous value).
        await collector.wait_until(lambda c: len(edges(c, lift)) == len(watched))
        assert {(m, v, p) for m, _, v, p in edges(collector, lift)} == {
            (m, before[m], None) for m in watched
        }
        sim_elevator.call("hall_call", floor=1, destination=4)
        seen_kinds = set()
        for _ in range(40):
            await tick(gateway, clock)
            now = clock.now_ms()
            after = sim_elevator.values()
            expected = {(m, now, after[m], before[m]) for m in watched if after[m] != before[m]}
            # Every transition of this poll is published before the next poll is due.
            await collector.wait_until(lambda c, e=expected: e <= set(edges(c, lift)), timeout=5)
            seen_kinds |= {m for m, *_ in expected}
            before = after
        assert {"car_status", "door_state", "door_zone", "passengers"} <= seen_kinds
    telemetry = [b for b in collector.of(TelemetryBatch) if b.device == lift]
    assert len(telemetry) == 1  # only the first poll's hourly report
    stamps = [e[1] for e in edges(collector, lift)]
    assert stamps == sorted(stamps)


async def test_lockout_on_a_moving_car_is_pending_until_it_is_safe_then_done(
    sim_elevator, clock, mqtt_url, unique_id, tmp_path, collect
):
    lift = sim_elevator.device_id
    config = fleet_config(
        tmp_path, gateway_id=unique_id, mqtt_url=mqtt_url, placements=[sim_elevator.placement]
    )
    collector = await collect(mqtt_url, f"vigil/v1/+/{unique_id}/+", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await gateway.link.connected.wait()
        sim_elevator.call("hall_call", floor=1, destination=6)
        while sim_elevator.values()["car_status"] != CarStatus.RUNNING:
            await tick(gateway, clock)
        await send(
            mqtt_url,
            Command(unique_id, lift, "cmd-lock-1", CommandAction.LOCKOUT, clock.now_ms()),
        )
        await collector.wait_until(lambda c: len(results(c, "cmd-lock-1")) == 1)
        pending = results(collector, "cmd-lock-1")[0]
        assert pending.outcome is CommandOutcome.PENDING_SAFETY
        assert sim_elevator.values()["lockout_state"] == LockoutState.PENDING
        applied_at = None
        for _ in range(120):
            await tick(gateway, clock)
            state = sim_elevator.values()
            if applied_at is None and state["lockout_state"] == LockoutState.APPLIED:
                applied_at = clock.now_ms()
                # Rule M6: only idle, in a door zone, doors open, nobody inside.
                assert state["car_status"] == CarStatus.STOPPED
                assert state["door_zone"] == 1
                assert state["door_state"] == DoorState.OPEN
                assert state["passengers"] == 0
                assert state["floor"] == 6
                break
        assert applied_at is not None
        await collector.wait_until(lambda c: len(results(c, "cmd-lock-1")) == 2)
    done = results(collector, "cmd-lock-1")[1]
    assert done.outcome is CommandOutcome.DONE
    assert done.ts == applied_at  # answered by the very poll that saw it applied
    lockout_edges = [(v, p) for m, _, v, p in edges(collector, lift) if m == "lockout_state"]
    assert lockout_edges == [(0.0, None), (1.0, 0.0), (2.0, 1.0)]


async def test_release_dim_and_refusals(sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect):
    runner = sim_fleet(elevators=1, poles=1)
    lift, pole = (p.device_id for p in runner.placements())
    config = fleet_config(
        tmp_path, gateway_id=unique_id, mqtt_url=mqtt_url, placements=runner.placements()
    )
    collector = await collect(mqtt_url, f"vigil/v1/cmd-result/{unique_id}/+", clock=clock)
    now = clock.now_ms()
    # Left retained on the broker before the gateway subscribes: delivered as retained.
    kept = Command(unique_id, pole, "c-kept", CommandAction.DIM, now, 7.0)
    await send(mqtt_url, kept, retain=True)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await gateway.link.connected.wait()
        # The car is idle with doors closed: the lockout waits until it parks with doors open.
        await send(mqtt_url, Command(unique_id, lift, "c-lock", CommandAction.LOCKOUT, now))
        await send(mqtt_url, Command(unique_id, pole, "c-dim", CommandAction.DIM, now, 40.0))
        await send(mqtt_url, Command(unique_id, pole, "c-dim-hi", CommandAction.DIM, now, 140.0))
        await send(mqtt_url, Command(unique_id, lift, "c-dim-lift", CommandAction.DIM, now, 10.0))
        await send(mqtt_url, Command(unique_id, "nobody", "c-who", CommandAction.RELEASE, now))
        await send(
            mqtt_url, Command(unique_id, pole, "c-old", CommandAction.DIM, now - 3_600_000, 5.0)
        )
        await publish_raw(
            mqtt_url,
            f"vigil/v1/cmd/{unique_id}/{pole}",
            json.dumps({"v": 1, "id": "c-bad", "action": "explode", "ts": now}).encode(),
        )
        ids = ["c-lock", "c-dim", "c-dim-hi", "c-dim-lift", "c-who", "c-old", "c-kept", "c-bad"]
        await collector.wait_until(lambda c: all(results(c, i) for i in ids))
        outcome = {i: results(collector, i)[0].outcome for i in ids}
        assert outcome == {
            "c-lock": CommandOutcome.PENDING_SAFETY,
            "c-dim": CommandOutcome.DONE,
            "c-dim-hi": CommandOutcome.REFUSED,
            "c-dim-lift": CommandOutcome.REFUSED,
            "c-who": CommandOutcome.REFUSED,
            "c-old": CommandOutcome.REFUSED,
            "c-kept": CommandOutcome.REFUSED,
            "c-bad": CommandOutcome.REFUSED,
        }
        assert runner.values(pole)["dim_level"] == 40.0  # the refused ones changed nothing
        # A redelivered command is answered again but not run again.
        runner.call(runner.device(pole).command, CommandAction.DIM, value=60.0)
        await send(mqtt_url, Command(unique_id, pole, "c-dim", CommandAction.DIM, now, 40.0))
        await collector.wait_until(lambda c: len(results(c, "c-dim")) == 2)
        assert results(collector, "c-dim")[1].outcome is CommandOutcome.DONE
        assert runner.values(pole)["dim_level"] == 60.0
        # Release withdraws the pending lockout.
        await send(mqtt_url, Command(unique_id, lift, "c-free", CommandAction.RELEASE, now))
        await collector.wait_until(
            lambda c: results(c, "c-free") and len(results(c, "c-lock")) == 2
        )
    await publish_raw(mqtt_url, encode(kept)[0], b"", retain=True)  # clear the retained one
    assert results(collector, "c-free")[0].outcome is CommandOutcome.DONE
    withdrawn = results(collector, "c-lock")[1]
    assert withdrawn.outcome is CommandOutcome.FAILED
    assert "c-free" in withdrawn.detail
    assert runner.values(lift)["lockout_state"] == LockoutState.NONE
