"""Commands are obeyed only from the platform's authenticated user, through the broker's ACL.

A real Mosquitto runs with a password file and the example ACL (gateway/examples/
mosquitto-acl.conf): the gateway logs in as its own id, the platform as ``vigil-platform``. A
command published by another gateway's user never reaches it; an anonymous client cannot even
connect.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.gateway.conftest import first_polls, fleet_config, running
from tests.gateway.test_gateway_elevator import results
from vigil.catalog import LockoutState
from vigil.services import MosquittoBroker
from vigil.wire import Command, CommandAction, CommandOutcome, encode

ACL = Path(__file__).resolve().parents[2] / "gateway" / "examples" / "mosquitto-acl.conf"
USERS = {"gw-1": "gw-secret", "gw-2": "other-secret", "vigil-platform": "platform-secret"}


class SecuredBroker(MosquittoBroker):
    """A private Mosquitto with passwords and the example ACL."""

    def _write_config(self) -> Path:
        config = super()._write_config()
        passwords = self.data_dir / "passwords"
        passwords.write_text("")
        for user, secret in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, secret], check=True)
        text = config.read_text().replace("allow_anonymous true", "allow_anonymous false")
        config.write_text(text + f"password_file {passwords}\nacl_file {ACL}\n")
        return config


@pytest.fixture
def secured_broker(tmp_path):
    broker = SecuredBroker(tmp_path / "mqtt")
    broker.start()
    yield broker
    broker.kill()


def publish_as(port: int, user: str | None, command: Command) -> int:
    """Connect as ``user`` and publish ``command`` with QoS 1; returns the CONNACK code."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if user is not None:
        client.username_pw_set(user, USERS[user])
    connack: list[int] = []
    answered = threading.Event()

    def on_connect(_client, _userdata, _flags, reason, _properties):
        connack.append(reason.value)
        answered.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(10)
        if connack[0] == 0:
            topic, payload = encode(command)
            client.publish(topic, payload, qos=1).wait_for_publish(10)
        return connack[0]
    finally:
        client.loop_stop()
        client.disconnect()


async def test_only_the_platform_user_can_command_a_gateway(
    sim_elevator, clock, secured_broker, tmp_path, collect
):
    lift = sim_elevator.device_id
    config = fleet_config(
        tmp_path,
        gateway_id="gw-1",
        mqtt_url=secured_broker.url,
        placements=[sim_elevator.placement],
        username="gw-1",
        password=USERS["gw-1"],
    )
    collector = await collect(
        secured_broker.url, "vigil/v1/cmd-result/gw-1/+", clock=clock,
        username="vigil-platform", password=USERS["vigil-platform"],
    )  # fmt: skip
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await gateway.link.connected.wait()  # its own credentials are accepted
        now = clock.now_ms()
        intruder = Command("gw-1", lift, "c-intruder", CommandAction.LOCKOUT, now)
        anonymous = Command("gw-1", lift, "c-anon", CommandAction.LOCKOUT, now)
        platform = Command("gw-1", lift, "c-platform", CommandAction.DIM, now, 10.0)
        assert await asyncio.to_thread(publish_as, secured_broker.port, "gw-2", intruder) == 0
        assert await asyncio.to_thread(publish_as, secured_broker.port, None, anonymous) != 0
        assert (
            await asyncio.to_thread(publish_as, secured_broker.port, "vigil-platform", platform)
            == 0
        )
        await collector.wait_until(lambda c: results(c, "c-platform"))
    assert results(collector, "c-platform")[0].outcome is CommandOutcome.REFUSED  # it got through
    assert results(collector, "c-intruder") == [] and results(collector, "c-anon") == []
    assert sim_elevator.values()["lockout_state"] == LockoutState.NONE
