"""The gateway process: coordinators, reporter, command executor and broker link, wired together.

``run_gateway(config=..., clock=..., stop=...)`` is the importable runner (the CLI and the demo
use it); ``GatewayService`` exposes the parts for tests and benchmarks (stats, outbox, link).
Every long-lived task is supervised: should one ever end with an error, it is logged, counted
and started again, so no part of the gateway dies for good while the process runs.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import defaultdict
from pathlib import Path

from gateway.commands import CommandExecutor
from gateway.link import BrokerLink
from gateway.models import Device, Gateway, Stats, load_config
from gateway.polling import Coordinator
from gateway.reporting import Reporter
from gateway.store import Outbox, Outgoing
from vigil import ops
from vigil.clock import Clock
from vigil.metrics import BUFFER_DEPTH, DEVICES_UNAVAILABLE
from vigil.tasks import supervise
from vigil.wire import GatewayEvent, GatewayState, Health, Status, encode

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


def quiet_closed_socket_writes(loop: asyncio.AbstractEventLoop) -> None:
    """Log at DEBUG, not as an ERROR traceback, one harmless race of aiomqtt: paho asks for the
    MQTT socket to be watched for writing from its thread, aiomqtt schedules ``add_writer``,
    and when the connection closes meanwhile the scheduled call finds the descriptor gone
    (``OSError: [Errno 9] Bad file descriptor``), on every ordinary disconnect. Everything else
    goes to the handler that was there before."""
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        error, handle_ = context.get("exception"), context.get("handle")
        if (
            isinstance(error, OSError)
            and error.errno == errno.EBADF
            and "add_writer" in repr(handle_)
        ):
            log.debug("MQTT socket closed before it was watched for writing (harmless)")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


class GatewayService:
    """One gateway: everything it runs, built from a validated configuration."""

    def __init__(self, *, config: Gateway, clock: Clock, stagger: bool = True) -> None:
        self.config = config
        self.clock = clock
        self.stats = Stats()
        self.outbox = Outbox(
            config.buffer_path,
            max_messages=config.settings.buffer.max_messages,
            now_ms=clock.now_ms,
        )
        if self.outbox.lost is not None:
            # queued first in the new buffer, so it is sent as soon as the broker answers
            topic, payload = encode(
                Status(
                    config.gateway_id,
                    GatewayState.ONLINE,
                    clock.now_ms(),
                    GatewayEvent.BUFFER_LOST,
                    f"{self.outbox.lost}; epoch {self.outbox.epoch}",
                )
            )
            self.outbox.append([Outgoing(topic, payload)])
        self.devices: dict[str, Device] = {d.id: d for d in config.devices}
        by_connection: dict[tuple[str, int], list[Device]] = defaultdict(list)
        for device in config.devices:
            by_connection[device.connection].append(device)
        self.reporter = Reporter(
            gateway_id=config.gateway_id,
            devices=config.devices,
            outbox=self.outbox,
            stats=self.stats,
        )
        self.coordinators = [
            Coordinator(
                host=host,
                port=port,
                devices=devices,
                clock=clock,
                defaults=config.settings.polling,
                handler=self.reporter,
                stats=self.stats,
                stagger=stagger,
            )
            for (host, port), devices in by_connection.items()
        ]
        coordinator_of = {d.id: c for c in self.coordinators for d in c.devices}
        self.commands = CommandExecutor(
            gateway_id=config.gateway_id,
            devices=self.devices,
            coordinators=coordinator_of,
            outbox=self.outbox,
            clock=clock,
            max_age_s=config.settings.commands.max_age_s,
        )
        self.reporter.after_poll = self.commands.after_poll
        self.link = BrokerLink(
            gateway_id=config.gateway_id,
            broker=config.settings.broker,
            outbox=self.outbox,
            clock=clock,
            on_command=self._on_command,
            health=self.health,
            health_interval_s=config.settings.health_interval_s,
        )
        self._last_health: tuple[int, int] = (clock.now_ms(), 0)
        self.tasks: list[asyncio.Task[None]] = []

    async def _on_command(self, topic: str, payload: bytes, retained: bool) -> None:
        await self.commands.handle(topic, payload, retained=retained)

    def health(self) -> Health:
        """Current health figures (polls/s since the previous call)."""
        now = self.clock.now_ms()
        since, polls = self._last_health
        elapsed_s = max((now - since) / 1000, 1e-9)
        rate = (self.stats.polls - polls) / elapsed_s if now > since else 0.0
        self._last_health = (now, self.stats.polls)
        return Health(
            self.config.gateway_id,
            now,
            round(rate, 3),
            self.stats.errors,
            self.outbox.depth,
            self.outbox.dropped,
            len(self.stats.unavailable),
        )

    def watch(self, health: ops.Health) -> None:
        """Register this gateway's readiness checks and live gauges (``--metrics-port``)."""
        BUFFER_DEPTH.set_function(lambda: self.outbox.depth)
        DEVICES_UNAVAILABLE.set_function(lambda: len(self.stats.unavailable))
        health.add_check("broker", self._broker_problem)
        health.add_check("pollers", self._pollers_problem)

    def _broker_problem(self) -> str | None:
        if self.link.connected.is_set():
            return None
        return (
            f"not connected to {self.config.settings.broker.url} "
            f"({self.outbox.depth} messages buffered)"
        )

    def _pollers_problem(self) -> str | None:
        ended = [task.get_name() for task in self.tasks if task.done()]
        return f"ended: {', '.join(ended)}" if ended else None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and publish until ``stop`` is set, then shut down cleanly."""
        quiet_closed_socket_writes(asyncio.get_running_loop())
        pollers = [
            asyncio.create_task(
                supervise(
                    f"poller {c.name}", c.run, clock=self.clock, restart_delay_s=RESTART_DELAY_S
                ),
                name=f"poll {c.name}",
            )
            for c in self.coordinators
        ]
        link = asyncio.create_task(
            supervise(
                "broker link",
                lambda: self.link.run(stop),
                clock=self.clock,
                restart_delay_s=RESTART_DELAY_S,
                stop=stop,
            ),
            name="broker link",
        )
        self.tasks = [*pollers, link]
        log.info(
            "gateway %s: %d devices on %d connections, buffer %s (%d queued)",
            self.config.gateway_id,
            len(self.devices),
            len(self.coordinators),
            self.outbox.path,
            self.outbox.depth,
        )
        try:
            await stop.wait()
        finally:
            stop.set()  # also when we are cancelled: the link then says goodbye and ends
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            try:
                await asyncio.wait_for(asyncio.shield(link), timeout=30)
            except (TimeoutError, asyncio.CancelledError):
                link.cancel()
                await asyncio.gather(link, return_exceptions=True)
            self.outbox.close()


async def run_gateway(
    *,
    config: Gateway | str | Path,
    clock: Clock,
    stop: asyncio.Event,
    health: ops.Health | None = None,
) -> GatewayService:
    """Run a gateway until ``stop`` is set (config: a loaded Gateway or a TOML file); with
    ``health``, its readiness checks and gauges are registered there."""
    loaded = config if isinstance(config, Gateway) else load_config(config)
    service = GatewayService(config=loaded, clock=clock)
    if health is not None:
        service.watch(health)
    await service.run(stop)
    return service
