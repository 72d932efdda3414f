"""The MQTT-native smart pole: wire-format telemetry, its own credentials, dim commands."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from simulators.lighting import StreetLight
from simulators.smart_pole import SmartPole
from vigil.services import free_port, mosquitto_binary, wait_for_port
from vigil.testing import MqttProbe
from vigil.wire import (
    Channel,
    Command,
    CommandAction,
    CommandOutcome,
    CommandResult,
    GatewayState,
    Status,
    TelemetryBatch,
    decode,
    encode,
    topic,
)


async def arrived(probe: MqttProbe, count: int) -> list:
    return await asyncio.to_thread(probe.wait_for, count)


async def asleep_on(clock, *, timeout: float = 10.0) -> None:
    """Let the loop run until a task sleeps on the fake clock."""

    async def poll() -> None:
        while clock.sleepers == 0:
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout)


@contextlib.asynccontextmanager
async def running(pole: SmartPole):
    task = asyncio.create_task(pole.run())
    try:
        await asyncio.wait_for(pole.connected.wait(), 10)
        yield pole
    finally:
        pole.stop()
        await asyncio.wait_for(task, 10)


def decoded(message, clock) -> object:
    return decode(message.topic, message.payload, now_ms=clock.now_ms())


async def test_publishes_wire_telemetry_every_period(mqtt_url, clock, unique_id):
    light = StreetLight(device_id=unique_id, clock=clock)
    pole = SmartPole(
        light=light, mqtt_url=mqtt_url, username=unique_id, password="s3cret", period_s=60
    )
    with MqttProbe(mqtt_url, topic(Channel.TELEMETRY, unique_id, unique_id)) as probe:
        async with running(pole):
            first = decoded((await arrived(probe, 1))[0], clock)
            await asleep_on(clock)  # the pole waits for its next period
            clock.advance(3 * 3600)  # dusk has passed: the lamp is lit
            second = decoded((await arrived(probe, 2))[1], clock)
    assert isinstance(first, TelemetryBatch) and isinstance(second, TelemetryBatch)
    assert (first.gateway, first.device, first.seq, second.seq) == (unique_id, unique_id, 1, 2)
    assert {s.metric for s in first.samples} == set(light.profile.metrics)
    lit = {s.metric: s.value for s in second.samples}
    assert lit["lamp_on"] == 1 and lit["lamp_power"] == 150.0
    assert second.samples[0].ts == clock.now_ms()  # device time from its own clock


async def test_obeys_dim_commands_and_refuses_others(mqtt_url, clock, unique_id):
    light = StreetLight(device_id=unique_id, clock=clock)
    clock.advance(3 * 3600)
    pole = SmartPole(light=light, mqtt_url=mqtt_url, username=unique_id, password="s3cret")
    results = topic(Channel.COMMAND_RESULT, unique_id, unique_id)
    with MqttProbe(mqtt_url, results) as probe:
        async with running(pole), aiomqtt.Client("127.0.0.1", int(mqtt_url.rsplit(":", 1)[1])) as c:
            now = clock.now_ms()
            for command in (
                Command(unique_id, unique_id, "cmd-1", CommandAction.DIM, now, value=40),
                Command(unique_id, unique_id, "cmd-2", CommandAction.DIM, now, value=150),
                Command(unique_id, unique_id, "cmd-3", CommandAction.LOCKOUT, now),
            ):
                name, payload = encode(command)
                await c.publish(name, payload, qos=1)
            answers = [decoded(m, clock) for m in await arrived(probe, 3)]
    by_id = {a.command_id: a for a in answers if isinstance(a, CommandResult)}
    assert by_id["cmd-1"].outcome is CommandOutcome.DONE
    assert by_id["cmd-2"].outcome is CommandOutcome.REFUSED and "above 100" in by_id["cmd-2"].detail
    assert by_id["cmd-3"].outcome is CommandOutcome.REFUSED
    assert light.values()["dim_level"] == 40 and light.values()["lamp_power"] == 60.0


async def test_status_is_retained_online_with_an_offline_will(mqtt_url, clock, unique_id):
    light = StreetLight(device_id=unique_id, clock=clock)
    pole = SmartPole(light=light, mqtt_url=mqtt_url, username=unique_id, password="x")
    async with running(pole):
        pass
    with MqttProbe(mqtt_url, topic(Channel.STATUS, unique_id)) as probe:
        status = decoded((await arrived(probe, 1))[0], clock)
    assert isinstance(status, Status) and status.state is GatewayState.ONLINE  # retained


@pytest.fixture
def password_broker(tmp_path: Path):
    """A private Mosquitto that only lets in pole-7 with its password."""
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "pole-7", "right"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous false", f"password_file {passwords}"]
    if os.geteuid() == 0:
        lines.append("user root")
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [str(mosquitto_binary()), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=15)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


async def test_connects_with_its_own_credentials(password_broker, clock):
    light = StreetLight(device_id="pole-7", clock=clock)
    good = SmartPole(light=light, mqtt_url=password_broker, username="pole-7", password="right")
    async with running(good):
        assert good.connected.is_set()
    bad = SmartPole(light=light, mqtt_url=password_broker, username="pole-7", password="wrong")
    with pytest.raises(aiomqtt.MqttError):
        await asyncio.wait_for(bad.run(), 10)  # refused at connect
