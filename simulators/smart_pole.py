"""An MQTT-native smart pole: a street light that is its own gateway (docs/wire-format.md).

It connects with its own credentials (username and password), publishes a retained ``online``
status (``offline`` is its last will), sends its telemetry every ``period_s`` of its clock in the
wire format, and obeys dim commands on ``vigil/v1/cmd/{pole}/{pole}``, answering each with a
CommandResult on ``vigil/v1/cmd-result/{pole}/{pole}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt

from simulators.lighting import StreetLight
from simulators.models import CommandRefused
from vigil.broker import broker_address
from vigil.wire import (
    Channel,
    Command,
    CommandAction,
    CommandOutcome,
    CommandResult,
    GatewayState,
    Message,
    Rejected,
    Sample,
    Status,
    TelemetryBatch,
    decode,
    encode,
    topic,
)

log = logging.getLogger(__name__)


class SmartPole:
    """Publishes a StreetLight's readings over MQTT and takes dim commands."""

    def __init__(
        self,
        *,
        light: StreetLight,
        mqtt_url: str,
        username: str,
        password: str,
        period_s: float = 60.0,
    ) -> None:
        self.light = light
        self.pole_id = light.device_id
        self.clock = light.clock
        self.mqtt_url = mqtt_url
        self.username = username
        self.password = password
        self.period_s = period_s
        self.seq = 0
        self.connected = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask ``run()`` to disconnect and return (its status then goes to the last will)."""
        self._stopping.set()

    @property
    def command_topic(self) -> str:
        """Where the platform sends this pole's commands."""
        return topic(Channel.COMMAND, self.pole_id, self.pole_id)

    async def run(self) -> None:
        """Connect, announce, and publish and obey until ``stop()``."""
        where = broker_address(self.mqtt_url)
        offline = Status(self.pole_id, GatewayState.OFFLINE, self.clock.now_ms())
        will_topic, will_payload = encode(offline)
        async with aiomqtt.Client(
            where.host,
            where.port,
            username=self.username,
            password=self.password,
            identifier=f"smart-pole-{self.pole_id}",
            will=aiomqtt.Will(will_topic, will_payload, qos=1, retain=True),
        ) as client:
            await client.subscribe(self.command_topic, qos=1)
            online = Status(self.pole_id, GatewayState.ONLINE, self.clock.now_ms())
            await self._publish(client, online, retain=True)
            self.connected.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._report(client))
                tasks.create_task(self._obey(client))

    async def _report(self, client: aiomqtt.Client) -> None:
        # Ends on stop() rather than by cancellation: Python 3.11's asyncio.wait_for (inside
        # aiomqtt's publish) can swallow a cancel that lands as the PUBACK arrives.
        while not self._stopping.is_set():
            await self._publish(client, self.telemetry())
            await self._sleep_unless_stopped(self.period_s)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        sleeping = asyncio.ensure_future(self.clock.sleep(seconds))
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (sleeping, stopping):
            waiter.cancel()

    async def _obey(self, client: aiomqtt.Client) -> None:
        # Also ends on stop() rather than by cancellation: only the wait for the next message is
        # ever cancelled, never a publish (see _report).
        messages = aiter(client.messages)
        while not self._stopping.is_set():
            arriving = asyncio.ensure_future(anext(messages))
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({arriving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not arriving.done():
                arriving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await arriving
                return
            message = arriving.result()
            result = self.handle_command(str(message.topic), bytes(message.payload))
            if result is not None:
                await self._publish(client, result)
                await self._publish(client, self.telemetry())  # show the new dim level at once

    def telemetry(self) -> TelemetryBatch:
        """A batch with every reading of the light now."""
        now_ms = self.clock.now_ms()
        samples = tuple(
            Sample(name, now_ms, float(value)) for name, value in self.light.values().items()
        )
        self.seq += 1
        return TelemetryBatch(self.pole_id, self.pole_id, self.seq, samples)

    def handle_command(self, name: str, payload: bytes) -> CommandResult | None:
        """Obey a dim command; anything else is refused (None when there is no id to answer)."""
        message = decode(name, payload, now_ms=self.clock.now_ms())
        if isinstance(message, Rejected) or not isinstance(message, Command):
            log.warning("smart pole %s ignores a bad command: %s", self.pole_id, message)
            return None
        outcome, detail = CommandOutcome.DONE, ""
        if message.action is not CommandAction.DIM:
            outcome, detail = CommandOutcome.REFUSED, f"a street light cannot {message.action}"
        else:
            try:
                self.light.command(CommandAction.DIM, value=message.value)
            except CommandRefused as exc:
                outcome, detail = CommandOutcome.REFUSED, str(exc)
        return CommandResult(
            self.pole_id, self.pole_id, message.command_id, outcome, self.clock.now_ms(), detail
        )

    async def _publish(
        self, client: aiomqtt.Client, message: Message, *, retain: bool = False
    ) -> None:
        name, payload = encode(message)
        await client.publish(name, payload, qos=1, retain=retain)
