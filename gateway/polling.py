"""Modbus polling: one coordinator per connection (host:port), modelled on Home Assistant's
DataUpdateCoordinator.

A coordinator owns one pymodbus async TCP client and polls the devices behind it on their own
schedules (fixed rate, no drift; a slot missed because a poll overran is skipped and counted).
Each poll reads the profile's merged blocks, each request bounded by the device's timeout.

Failure handling is the point of this module:

* every poll is wrapped: whatever it raises (pymodbus exceptions, timeouts, a bad frame, a
  bug in a handler) is caught, counted and handed to the handler as a failed poll, logged once
  per outage; the next poll stays scheduled. The loop itself is wrapped again, so the
  coordinator task cannot end while the gateway runs (the ThingsBoard gateway's polling task
  died when pymodbus raised after its retries; here that cannot happen);
* a connection that fails or times out is closed (a late answer must never be taken for the
  next request's); it is reopened at the next poll if a unit behind it answered lately (on
  this connection or the one before: a silent unit is the unit's fault, and its neighbours
  must not miss a poll for it), otherwise after a capped exponential backoff (a server that
  accepts connections but never answers is not hammered);
* a device that did not answer is retried after the same kind of backoff, so a dead unit on a
  shared line costs one timeout per step instead of one per poll. Polls that fall inside a
  backoff fail at once, without I/O; they stay scheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU

from gateway.flows import Decoded, decode_poll, words_of
from gateway.models import Device, PollingDefaults, Stats
from vigil.clock import Clock, to_ms
from vigil.profiles import Block, Point, Register, Table, encode_value, profile_reads
from vigil.tasks import cancel_requested, end_if_cancelled

log = logging.getLogger(__name__)


class PollFailed(Exception):
    """A poll or write that did not get a usable answer."""


class Unreachable(PollFailed):
    """The connection is down and its next attempt is not due yet."""


class DeviceError(PollFailed):
    """The device answered with a Modbus exception."""


class PollHandler(Protocol):
    """Receives the outcome of every poll (must not block; exceptions are caught and counted)."""

    def polled(self, device: Device, *, ts: int, decoded: Decoded) -> None:
        """A poll succeeded."""
        ...

    def failed(self, device: Device, *, ts: int, error: BaseException) -> None:
        """A poll failed."""
        ...


class Coordinator:
    """Polls the devices behind one Modbus TCP connection."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        devices: Sequence[Device],
        clock: Clock,
        defaults: PollingDefaults,
        handler: PollHandler,
        stats: Stats,
        stagger: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.devices = list(devices)
        self.clock = clock
        self.defaults = defaults
        self.handler = handler
        self.stats = stats
        self.stagger = stagger
        self.blocks: dict[str, list[Block]] = {d.id: profile_reads(d.profile) for d in devices}
        self.schedule: dict[str, datetime] = {}
        self._client: AsyncModbusTcpClient | None = None
        self._io = asyncio.Lock()  # polls and command writes never interleave on the wire
        self._answered = False  # the open connection has answered at least once
        # when any unit behind this host:port last answered, across reconnections: a unit
        # that stays silent on a fresh connection is then the unit's fault, not the line's
        self._last_answer_at: datetime | None = None
        self._retry_at: datetime | None = None
        self._backoff_s = defaults.backoff_initial_s
        self._down_logged = False
        # One pymodbus client serves the connection and times requests out after the longest
        # device timeout (connecting too); a unit with a shorter one is given up on after its own.
        self._timeout_s = max(d.timeout_s for d in devices)
        self._device_retry: dict[str, tuple[datetime, float]] = {}  # (next attempt, backoff)

    @property
    def name(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; nothing a poll does can end this loop."""
        start = self.clock.now()
        for index, device in enumerate(self.devices):
            # Spread the devices of a connection over their period instead of a burst.
            offset = device.poll_s * index / len(self.devices) if self.stagger else 0.0
            self.schedule[device.id] = start + timedelta(seconds=offset)
        try:
            while True:
                end_if_cancelled()  # a cancellation a library swallowed still ends us
                try:
                    await self._cycle()
                except asyncio.CancelledError:
                    if cancel_requested():
                        raise
                    self._count_error("a stray cancellation reached the poll loop")
                except Exception:
                    self._count_error("poll loop error", exc_info=True)
                    await self.clock.sleep(min(d.poll_s for d in self.devices))
        finally:
            self.close()

    async def _cycle(self) -> None:
        now = self.clock.now()
        due_at = min(self.schedule.values())
        if due_at > now:
            await self.clock.sleep((due_at - now).total_seconds())
            return
        for device in sorted(self.devices, key=lambda d: self.schedule[d.id]):
            scheduled = self.schedule[device.id]
            if scheduled > now:
                continue
            await self.poll_once(device, scheduled=scheduled)
            self.schedule[device.id] = self._next_slot(device, scheduled=scheduled)

    def _next_slot(self, device: Device, *, scheduled: datetime) -> datetime:
        period = timedelta(seconds=device.poll_s)
        following = scheduled + period
        now = self.clock.now()
        if following <= now:
            missed = int((now - following) / period) + 1
            self.stats.missed_slots += missed
            following += period * missed
        return following

    async def poll_once(self, device: Device, *, scheduled: datetime | None = None) -> bool:
        """Poll one device and hand the outcome to the handler; never raises (but cancellation)."""
        started = self.clock.now()
        ts = to_ms(started)
        lag_s = max(0.0, (started - scheduled).total_seconds()) if scheduled else 0.0
        try:
            self._check_device_backoff(device, now=started)
            decoded = await self._read(device)
        except Unreachable as exc:
            decoded, error = None, exc
        except asyncio.CancelledError:
            if cancel_requested():
                raise
            decoded, error = None, PollFailed("the request was cancelled under us")
        except Exception as exc:  # every failure, whatever raised it, is one failed poll
            decoded, error = None, exc
            self._device_failed(device, now=started)
        ok = decoded is not None
        if not ok:
            self.stats.failures[type(error).__name__] += 1
        if ok:
            self._device_retry.pop(device.id, None)
        self.stats.poll_done(ok=ok, lag_s=lag_s)
        try:
            if decoded is not None:
                self.handler.polled(device, ts=ts, decoded=decoded)
            else:
                self.handler.failed(device, ts=ts, error=error)
        except Exception:
            self._count_error(f"handling the poll of {device.id} failed", exc_info=True)
        return ok

    def _check_device_backoff(self, device: Device, *, now: datetime) -> None:
        retry = self._device_retry.get(device.id)
        if retry is not None and now < retry[0]:
            wait = (retry[0] - now).total_seconds()
            raise Unreachable(f"{device.id} did not answer; next attempt in {wait:.1f}s")

    def _device_failed(self, device: Device, *, now: datetime) -> None:
        """Space the attempts on a silent device (capped exponential backoff).

        Each attempt on a unit that does not answer holds the connection for a whole timeout,
        so a dead unit on a shared line is tried at 1, 2, 4... up to ``backoff_max_s`` apart
        rather than every poll; its scheduled polls in between fail at once, without I/O.
        """
        _, backoff = self._device_retry.get(device.id, (now, self.defaults.backoff_initial_s))
        self._device_retry[device.id] = (
            now + timedelta(seconds=backoff),
            min(backoff * 2, self.defaults.backoff_max_s),
        )

    def _count_error(self, what: str, *, exc_info: bool = False) -> None:
        self.stats.errors += 1
        log.error("%s: %s", self.name, what, exc_info=exc_info)

    # -- I/O ---------------------------------------------------------------------------------------

    async def _read(self, device: Device) -> Decoded:
        async with self._io:
            client = await self._connection()
            blocks: list[tuple[Block, list[int | bool]]] = []
            for block in self.blocks[device.id]:
                response = await self._request(
                    client, device, _read_call(client, block, unit=device.unit)
                )
                values = response.bits if block.table.is_bits else response.registers
                blocks.append((block, words_of(block, values)))
        return decode_poll(profile=device.profile, blocks=blocks)

    async def write(self, device: Device, *, point: Point, value: float) -> None:
        """Write ``value`` to a command point of ``device``; raises PollFailed when it fails."""
        words = encode_value(value, point=point)
        async with self._io:
            client = await self._connection()
            if point.table is Table.COIL:
                call = client.write_coil(point.address, bool(words[0]), device_id=device.unit)
            elif len(words) == 1:
                call = client.write_register(point.address, words[0], device_id=device.unit)
            else:
                call = client.write_registers(point.address, words, device_id=device.unit)
            await self._request(client, device, call)

    async def read_register(self, device: Device, *, register: Register) -> float:
        """Read one metric register of ``device`` now (commands check the controller's answer)."""
        block = Block(register.table, register.address, register.count)
        async with self._io:
            client = await self._connection()
            response = await self._request(
                client, device, _read_call(client, block, unit=device.unit)
            )
        values = response.bits if block.table.is_bits else response.registers
        decoded = decode_poll(profile=device.profile, blocks=[(block, words_of(block, values))])
        return decoded.readings[register.metric].value

    async def _request(
        self, client: AsyncModbusTcpClient, device: Device, call: object
    ) -> ModbusPDU:
        # pymodbus times the request out after the connection's (longest) timeout and raises
        # ModbusIOException, as it did in the ThingsBoard gateway; for such a unit this bound
        # only guards against a hang. A unit with a shorter timeout is given up on after its
        # own: silent, it must not hold the line for a slow neighbour's timeout.
        # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.)
        bound_s = device.timeout_s if device.timeout_s < self._timeout_s else self._timeout_s + 1
        try:
            async with asyncio.timeout(bound_s):
                response = await call  # type: ignore[misc]
        except Exception as exc:
            # Timeouts, lost connections and garbled frames leave the link in doubt: close it.
            self._drop_connection(reason=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, TimeoutError):
                self.stats.timeouts += 1
                raise PollFailed(f"no answer from unit {device.unit} in time") from None
            if isinstance(exc, ModbusIOException):
                self.stats.timeouts += 1
            raise
        if response is None:
            raise PollFailed("no response")
        self._answered = True
        self._last_answer_at = self.clock.now()
        self._backoff_s = self.defaults.backoff_initial_s
        if self._down_logged:
            log.info("%s answers again", self.name)
            self._down_logged = False
        if response.isError():
            code = getattr(response, "exception_code", "?")
            raise DeviceError(f"unit {device.unit} answered with Modbus exception {code}")
        return response

    async def _connection(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        now = self.clock.now()
        if self._retry_at is not None and now < self._retry_at:
            wait = (self._retry_at - now).total_seconds()
            raise Unreachable(f"{self.name} is down; next attempt in {wait:.1f}s")
        self.close()
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self._timeout_s,
            retries=0,
            reconnect_delay=0,  # reconnection is ours, with backoff on this clock
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                connected = await client.connect()
        except Exception:
            connected = False
        if not connected:
            client.close()
            self._schedule_retry(reason="connection refused or timed out")
            raise Unreachable(f"cannot connect to {self.name}")
        self._client = client
        self._answered = False
        self._retry_at = None
        return client

    def _drop_connection(self, *, reason: str) -> None:
        answered = self._answered or self._line_answers_lately()
        self.close()
        if answered:
            # it worked a moment ago (a silent unit has its own backoff): reconnect at the next
            # poll, so the units sharing the line with a silent one miss nothing
            self._retry_at = None
            log.debug("%s: connection dropped (%s)", self.name, reason)
        else:
            self._schedule_retry(reason=reason)

    def _line_answers_lately(self) -> bool:
        """Some unit behind this connection answered within its recent polls."""
        if self._last_answer_at is None:
            return False
        recent = timedelta(seconds=2 * max(d.poll_s for d in self.devices) + 2 * self._timeout_s)
        return self.clock.now() - self._last_answer_at <= recent

    def _schedule_retry(self, *, reason: str) -> None:
        self._retry_at = self.clock.now() + timedelta(seconds=self._backoff_s)
        if not self._down_logged:
            log.warning("%s unreachable (%s); retrying with backoff", self.name, reason)
            self._down_logged = True
        else:
            log.debug("%s still unreachable; next attempt in %.1fs", self.name, self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self.defaults.backoff_max_s)

    def close(self) -> None:
        """Close the Modbus connection (reopened by the next poll)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self._answered = False


def _read_call(client: AsyncModbusTcpClient, block: Block, *, unit: int) -> object:
    if block.table is Table.COIL:
        return client.read_coils(block.start, count=block.count, device_id=unit)
    if block.table is Table.DISCRETE_INPUT:
        return client.read_discrete_inputs(block.start, count=block.count, device_id=unit)
    if block.table is Table.HOLDING:
        return client.read_holding_registers(block.start, count=block.count, device_id=unit)
    return client.read_input_registers(block.start, count=block.count, device_id=unit)
