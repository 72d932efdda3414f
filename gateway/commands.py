"""Commands from the platform: lockout, release and dim, written to the device's command points.

The gateway obeys only what arrives on its own command topics (``vigil/v1/cmd/{gateway}/+``;
the broker's ACLs decide who may publish there, docs/gateway.md), decodes it strictly with
``vigil.wire.decode``, and refuses anything for a device it does not poll, a retained message,
a command older than ``commands.max_age_s``, or an action the device's profile does not take.

Every command gets a ``CommandResult`` with its id: ``done``, ``refused``, ``failed``, or for a
lockout the controller has not applied yet ``pending_safety`` (rule M6: the controller applies
it only when the car is idle at a landing with its doors open and nobody inside), followed by
``done`` when a later poll sees ``lockout_state`` applied. Outcomes are kept in the gateway's
SQLite file, so a redelivered command is answered again without being run twice, and a pending
lockout is still followed after a gateway restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping

from gateway.flows import (
    Decoded,
    Verdict,
    check_command,
    command_value,
    lockout_verdict,
    pending_lockout_verdict,
    written_detail,
)
from gateway.models import Device
from gateway.polling import Coordinator
from gateway.store import CommandRecord, Outbox, Outgoing
from vigil.clock import Clock
from vigil.wire import (
    ID_PATTERN,
    Channel,
    Command,
    CommandAction,
    CommandOutcome,
    CommandResult,
    Rejected,
    decode,
    encode,
    parse_topic,
)

log = logging.getLogger(__name__)

LOCKOUT_STATE = "lockout_state"
FORGET_AFTER_MS = 7 * 24 * 3600 * 1000  # finished command ids are remembered this long


class CommandExecutor:
    """Validates, runs and answers commands for the gateway's devices."""

    def __init__(
        self,
        *,
        gateway_id: str,
        devices: Mapping[str, Device],
        coordinators: Mapping[str, Coordinator],
        outbox: Outbox,
        clock: Clock,
        max_age_s: float,
    ) -> None:
        self.gateway_id = gateway_id
        self.devices = devices
        self.coordinators = coordinators
        self.outbox = outbox
        self.clock = clock
        self.max_age_ms = int(max_age_s * 1000)
        self.pending: set[str] = {d for d in devices if outbox.pending_commands(d)}
        self.outbox.forget_commands(before_ms=clock.now_ms() - FORGET_AFTER_MS)
        # ids being run now: a copy arriving meanwhile waits for the first, then is answered
        # from the log (commands run concurrently, so the log alone would let both through)
        self._running: dict[str, asyncio.Event] = {}

    async def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """Run one message received on the command subscription and queue its result."""
        now = self.clock.now_ms()
        decoded = decode(topic, payload, now_ms=now)
        if isinstance(decoded, Rejected):
            self._answer_rejected(topic, payload, decoded)
            return
        if not isinstance(decoded, Command) or decoded.gateway != self.gateway_id:
            log.warning("ignored a message on %s that is not a command for us", topic)
            return
        running = self._running.get(decoded.command_id)
        if running is not None:
            await running.wait()
        earlier = self.outbox.command(decoded.command_id)
        if earlier is not None:
            # A redelivery (QoS 1), a replay or a second copy (the retained one beside the
            # session's): answer with the first result, run nothing twice.
            self._result(
                decoded.device,
                decoded.command_id,
                Verdict(CommandOutcome(earlier.outcome), earlier.detail),
            )
            return
        finished = self._running[decoded.command_id] = asyncio.Event()
        try:
            verdict = await self._run(decoded, retained=retained, now=now)
            self._remember(decoded, verdict, now)
        finally:
            del self._running[decoded.command_id]
            finished.set()

    def _remember(self, decoded: Command, verdict: Verdict, now: int) -> None:
        self.outbox.record_command(
            CommandRecord(
                decoded.command_id,
                decoded.device,
                str(decoded.action),
                str(verdict.outcome),
                verdict.detail,
                now,
            )
        )
        if verdict.outcome is CommandOutcome.PENDING_SAFETY:
            self.pending.add(decoded.device)
        log.info(
            "command %s %s on %s: %s %s",
            decoded.command_id,
            decoded.action,
            decoded.device,
            verdict.outcome,
            verdict.detail,
        )
        self._result(decoded.device, decoded.command_id, verdict)

    async def _run(self, command: Command, *, retained: bool, now: int) -> Verdict:
        device = self.devices.get(command.device)
        if device is None:
            return Verdict(
                CommandOutcome.REFUSED, f"{command.device} is not polled by this gateway"
            )
        if retained:
            return Verdict(CommandOutcome.REFUSED, "retained commands are not obeyed")
        if now - command.ts > self.max_age_ms:
            return Verdict(CommandOutcome.REFUSED, f"older than {self.max_age_ms // 1000}s")
        problem = check_command(profile=device.profile, action=command.action, value=command.value)
        if problem is not None:
            return problem
        coordinator = self.coordinators[device.id]
        point = device.profile.command(command.action)
        value = command_value(profile=device.profile, action=command.action, value=command.value)
        try:
            await coordinator.write(device, point=point, value=value)
        except Exception as exc:
            return Verdict(CommandOutcome.FAILED, f"write failed: {type(exc).__name__}: {exc}")
        if command.action is CommandAction.RELEASE:
            self._withdraw_pending(device, by=command.command_id)
        if command.action is not CommandAction.LOCKOUT:
            return Verdict(CommandOutcome.DONE, written_detail(point=point, value=value))
        return await self._lockout_state(device, coordinator)

    async def _lockout_state(self, device: Device, coordinator: Coordinator) -> Verdict:
        try:
            register = device.profile.register(LOCKOUT_STATE)
        except KeyError:
            return lockout_verdict(None)
        try:
            state = await coordinator.read_register(device, register=register)
        except Exception as exc:
            # Written but not confirmed: the next polls will tell, so it stays pending.
            return Verdict(CommandOutcome.PENDING_SAFETY, f"written; state not read back ({exc})")
        return lockout_verdict(state)

    def after_poll(self, device: Device, decoded: Decoded, ts: int) -> None:
        """Resolve pending lockouts of ``device`` from a poll's lockout_state."""
        if device.id not in self.pending:
            return
        reading = decoded.readings.get(LOCKOUT_STATE)
        if reading is None or not reading.good:
            return
        verdict = pending_lockout_verdict(reading.value)
        if verdict is None:
            return
        for record in self.outbox.pending_commands(device.id):
            self._finish(record, verdict)
        self.pending.discard(device.id)

    def _withdraw_pending(self, device: Device, *, by: str) -> None:
        verdict = Verdict(CommandOutcome.FAILED, f"withdrawn by release {by}")
        for record in self.outbox.pending_commands(device.id):
            self._finish(record, verdict)
        self.pending.discard(device.id)

    def _finish(self, record: CommandRecord, verdict: Verdict) -> None:
        self.outbox.record_command(
            CommandRecord(
                record.id,
                record.device,
                record.action,
                str(verdict.outcome),
                verdict.detail,
                record.received,
            )
        )
        log.info("command %s on %s: %s", record.id, record.device, verdict.outcome)
        self._result(record.device, record.id, verdict)

    def _answer_rejected(self, topic: str, payload: bytes, rejected: Rejected) -> None:
        """Refuse an undecodable command when it names an id we can answer to; else log it."""
        log.warning("command on %s rejected: %s %s", topic, rejected.reason, rejected.detail)
        address = parse_topic(topic)
        if isinstance(address, Rejected) or address.channel is not Channel.COMMAND:
            return
        if address.gateway != self.gateway_id or address.device is None:
            return
        try:
            command_id = json.loads(payload).get("id")
        except Exception:
            return
        if isinstance(command_id, str) and ID_PATTERN.match(command_id):
            detail = f"{rejected.reason}: {rejected.detail}"
            self._result(address.device, command_id, Verdict(CommandOutcome.REFUSED, detail))

    def _result(self, device: str, command_id: str, verdict: Verdict) -> None:
        result = CommandResult(
            self.gateway_id,
            device,
            command_id,
            verdict.outcome,
            self.clock.now_ms(),
            verdict.detail[:500],
        )
        topic, payload = encode(result)
        self.outbox.append([Outgoing(topic, payload)])
