"""The compliance engine on a fake clock: sweeps, reacts to events, publishes lockout/release
commands over real MQTT (rules M5, M6), and two engines at once decide everything once."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from compliance.log import flows as log_flows
from compliance.log import service as log_service
from runtime import engine
from vigil import notify
from vigil.config import ComplianceSettings, Settings
from vigil.testing import MqttProbe
from vigil.wire import Command, CommandAction, decode

MODULES = ("compliance.maintenance.scheduled", "compliance.log.scheduled")


def _settings(tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        compliance=ComplianceSettings(sweep_interval_s=60, checkpoint_interval_s=3600),
    )


@contextlib.asynccontextmanager
async def _engines(n, *, resources_for, settings):
    # n engine processes, each with its own pools and MQTT client
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(resources_for(settings=settings)) for _ in range(n)
        ]
        tasks = [
            asyncio.create_task(engine.run(resources=resources, stop=stop, modules=MODULES))
            for resources in opened
        ]
        try:
            yield tasks
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)


async def _states(listener, wanted: dict[str, str], *, timeout: float = 15.0) -> None:
    """Wait until every device in ``wanted`` has reported its wanted state."""
    pending = dict(wanted)

    async def consume() -> None:
        async for notice in listener:
            if pending.get(notice["device"]) == notice["state"]:
                del pending[notice["device"]]
                if not pending:
                    return

    await asyncio.wait_for(consume(), timeout)


async def _asleep(clock, count: int) -> None:
    """Wait until ``count`` engine timers sleep on the fake clock (every engine is idle)."""

    async def idle() -> None:
        while clock.sleepers < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(idle(), 15)


def _commands(probe: MqttProbe, count: int, now_ms: int) -> list[Command]:
    messages = probe.wait_for(count, timeout=15)
    out = []
    for message in messages:
        decoded = decode(message.topic, message.payload, now_ms=now_ms)
        assert isinstance(decoded, Command), decoded
        out.append(decoded)
    return out


async def test_engine_locks_out_an_overdue_lift_and_releases_it_after_a_verified_visit(
    estate, db_url, mqtt_url, clock, tmp_path, resources_for
):
    settings = _settings(tmp_path)
    probe = MqttProbe(mqtt_url, f"vigil/v1/cmd/{estate.gateway}/#")
    async with notify.Listener(db_url, [notify.ESCALATIONS]) as listener:
        async with _engines(1, resources_for=resources_for, settings=settings):
            await _asleep(clock, 2)  # maintenance and checkpoint runners
            clock.advance(timedelta(days=16))
            await _states(listener, {"lift-1": "overdue"})
            clock.advance(timedelta(hours=72))
            await _states(listener, {"lift-1": "lockout_pending"})
            [lockout] = await asyncio.to_thread(_commands, probe, 1, clock.now_ms())
            assert lockout.action is CommandAction.LOCKOUT and lockout.device == "lift-1"
            assert lockout.gateway == estate.gateway

            # The controller applies the lockout when safe; ingest stores the event and notifies.
            event_id = estate.event("lift-1", "lockout_state", clock.now(), 2)
            notify.send(
                estate.conn,
                notify.EVENTS,
                [
                    notify.event_payload(
                        notify.EventNotice(event_id, "lift-1", "lockout_state", 0, 2.0, 1.0)
                    )
                ],
            )
            await _states(listener, {"lift-1": "locked_out"})

            # A verified visit: the record alone wakes the engine, which releases the lift.
            clock.advance(timedelta(hours=3))
            start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2))
            estate.record("lift-1", start, end, at=clock.now())
            await _states(listener, {"lift-1": "ok"})
            commands = await asyncio.to_thread(_commands, probe, 2, clock.now_ms())
            assert [c.action for c in commands] == [CommandAction.LOCKOUT, CommandAction.RELEASE]
    probe.close()
    assert log_flows.verify(estate.conn).ok
    # the checkpoint runner signed the log on start
    assert estate.conn.execute("SELECT count(*) AS n FROM compliance_checkpoints").fetchone()["n"]


async def test_two_engines_at_once_decide_and_send_everything_exactly_once(
    estate, db_url, mqtt_url, clock, tmp_path, resources_for
):
    devices = [estate.add_elevator(f"lift-{n}") for n in range(2, 13)] + ["lift-1"]
    settings = _settings(tmp_path)
    probe = MqttProbe(mqtt_url, f"vigil/v1/cmd/{estate.gateway}/#")
    async with notify.Listener(db_url, [notify.ESCALATIONS]) as listener:
        async with _engines(2, resources_for=resources_for, settings=settings):
            await _asleep(clock, 4)
            clock.advance(timedelta(days=16))
            await _states(listener, dict.fromkeys(devices, "overdue"))
            await _asleep(clock, 4)
            clock.advance(timedelta(hours=72))
            await _states(listener, dict.fromkeys(devices, "lockout_pending"))
            commands = await asyncio.to_thread(_commands, probe, len(devices), clock.now_ms())
            await _asleep(clock, 4)
    assert sorted(c.device for c in commands) == sorted(devices)
    assert len({c.command_id for c in commands}) == len(devices)
    conn = estate.conn
    assert conn.execute("SELECT count(*) AS n FROM commands").fetchone()["n"] == len(devices)
    transitions = log_service.entries(conn, kind="escalation.transition")
    assert len(transitions) == 2 * len(devices)
    assert len({(e.subject_id, e.body["to"]) for e in transitions}) == 2 * len(devices)
    assert log_flows.verify(conn).ok
    probe.close()


def test_the_engine_runs_every_runner_module_that_exists():
    found = [name for name, _ in engine.runners()]
    assert found == list(engine.RUNNER_MODULES)  # maintenance, checkpoints, rescue
    assert engine.runners(("compliance.nothing_here.scheduled",)) == []


async def test_a_failing_runner_is_restarted_after_a_delay(clock, tmp_path, resources_for):
    calls: list[int] = []
    stop = asyncio.Event()

    async def flaky(**kwargs: object) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("database went away")
        stop.set()

    async with resources_for(settings=_settings(tmp_path)) as resources:
        task = asyncio.create_task(
            engine._supervise("flaky", flaky, resources=resources, stop=stop)
        )
        await _asleep(clock, 1)
        assert calls == [0]
        clock.advance(engine.RESTART_DELAY_S)
        await asyncio.wait_for(task, 5)
        assert calls == [0, 1]
