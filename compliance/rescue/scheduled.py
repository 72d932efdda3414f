"""The rescue runner: entrapment detection (R1), dispatch timers (R4) and deadlines (R2, R6).

It reacts to what ingest committed (``vigil_events`` and ``vigil_state`` notices) and to
incident changes (``vigil_alerts``); dwell, accept and deadline timers sleep on the injected
clock. Nothing polls the database in a loop. It also runs the alerts workers (deliveries,
escalation, roster checks), so one ``compliance`` engine carries detection to people.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg_pool import ConnectionPool

from alerts import scheduled as alerts_scheduled
from compliance.rescue import flows, service
from compliance.rescue.models import (
    Condition,
    RescueError,
    Status,
    Step,
    TravelEstimator,
    Trigger,
)
from vigil import notify
from vigil.catalog import ServiceMode
from vigil.clock import Clock, from_ms
from vigil.db.pool import run_in_thread
from vigil.resources import Resources

log = logging.getLogger(__name__)

T = TypeVar("T")

# What ``processed`` receives once the runner listens and has re-armed its timers.
READY = "ready"

# At start, alarm presses this recent without an incident are acted on (rule R1: never missed).
MISSED_PRESS_LOOKBACK_S = 900.0
# A notice whose handling fails (the database is away) is retried after these delays.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)

# Metrics whose change can start or end a dwell condition.
DWELL_METRICS = frozenset({"car_status", "door_zone", "door_state", "passengers"})


@dataclass
class _Dwell:
    condition: Condition
    task: asyncio.Task[None] | None  # None once signalled (or suppressed)
    suppressed: str | None = None  # rule R1: why this condition is not an entrapment


class Rescue:
    """Detection and dispatch state of one runner; every decision is made in the database."""

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        clock: Clock,
        estimator: TravelEstimator,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._estimator = estimator
        self._dwell: dict[str, _Dwell] = {}
        self._timers: dict[tuple[str, int], tuple[Any, asyncio.Task[None]]] = {}

    async def db(self, action: Callable[..., T], **kwargs: Any) -> T:
        """Run a flow in a worker thread in one transaction on a pooled connection."""
        return await run_in_thread(self._pool, action, transaction=True, **kwargs)

    # -- start-up --------------------------------------------------------------------------------

    async def rearm(self) -> None:
        """After (re)start: re-evaluate lifts with passengers, a held alarm button or a fault
        code, answer alarm presses nobody acted on while we were down, and restore incident
        timers. Rule R2: what is found now counts from when it was received, not from the
        restart, so the signals are replayed oldest first (the first opens the incident)."""
        now = self._clock.now()
        states = await self.db(service.lift_states, device_ids=None)
        opened = await self.db(lambda conn: service.open_incidents(conn))
        busy = {incident.device_id for incident in opened}
        by_device = {s.device_id: s for s in states}
        pressed = {
            s.device_id: s.changed_at.get("alarm_button", now)
            for s in states
            if s.value("alarm_button") == 1
        }
        for device, pressed_at in await self.db(
            service.unanswered_alarm_presses,
            since=now - timedelta(seconds=MISSED_PRESS_LOOKBACK_S),
        ):
            pressed[device] = min(pressed.get(device, pressed_at), pressed_at)
        found: list[tuple[Any, int, str]] = []  # (received at, order, device)
        for device, pressed_at in pressed.items():
            state = by_device.get(device)
            if device not in busy and (state is None or flows.alarm_button_means_entrapment(state)):
                found.append((pressed_at, 0, device))
        for state in states:
            condition = flows.dwell_condition(state, now=now)
            if condition is not None:
                found.append(
                    (condition.since + timedelta(seconds=condition.dwell_s), 1, state.device_id)
                )
            if state.value("fault_code"):
                found.append((state.changed_at.get("fault_code", now), 2, state.device_id))
        for _, order, device in sorted(found):
            state = by_device.get(device)
            if order == 0:
                await self.signal(
                    device,
                    Trigger.ALARM_BUTTON,
                    at=pressed[device],
                    detail={"found_at_start": True},
                )
            elif order == 1 and state is not None:
                await self._evaluate_states([state], devices=[device])
            elif state is not None:
                await self._fault_code(device, state, at=state.changed_at.get("fault_code"))
        # the rest: conditions that have not lasted their dwell yet get their timers
        await self._evaluate_states(states, devices=[s.device_id for s in states])
        for incident in opened:
            if incident.status is Status.REPORTED:
                await self.dispatch(incident.id)
            await self.refresh(incident.id)

    # -- notices ---------------------------------------------------------------------------------

    async def on_notice(self, notice: Any) -> None:
        """Handle one notice from ingest or from an incident change."""
        if isinstance(notice, notify.EventNotice):
            await self.on_event(notice)
        elif isinstance(notice, notify.StateNotice):
            await self.evaluate(notice.devices)
        elif isinstance(notice, dict) and notice.get("kind") == "incident":
            if notice.get("change") == "reported":
                await self.dispatch(int(notice["id"]))
            await self.refresh(int(notice["id"]))

    async def on_event(self, notice: notify.EventNotice) -> None:
        """An event committed by ingest."""
        if notice.metric == "alarm_button" and notice.value == 1:
            [state] = await self.db(service.lift_states, device_ids=[notice.device]) or [None]
            # rule R1: unless people can walk out (landing, doors open), a press is an entrapment;
            # with no state known at all we assume the worst
            if state is None or flows.alarm_button_means_entrapment(state):
                await self.signal(
                    notice.device,
                    Trigger.ALARM_BUTTON,
                    detail={"event_id": notice.id, "device_ts": from_ms(notice.ts)},
                )
        elif notice.metric == "fault_code":
            [state] = await self.db(service.lift_states, device_ids=[notice.device]) or [None]
            await self._fault_code(notice.device, state, at=None, code=notice.value)
        elif notice.metric == "service_mode" and notice.value == ServiceMode.INSPECTION:
            # rule R6: inspection mode at the car proves that someone arrived
            incident = await self.db(
                flows.inspection_arrival, device_id=notice.device, at=self._clock.now()
            )
            if incident is not None:
                await self.refresh(incident.id)
        if notice.metric in DWELL_METRICS:
            await self.evaluate([notice.device])

    # -- detection (rule R1) ---------------------------------------------------------------------

    async def _fault_code(
        self,
        device: str,
        state: Any,
        *,
        at: Any,
        code: float | None = None,
    ) -> None:
        """Rule R1: GB/T 24476 codes 4 and 11 open an incident; codes 1-10 raise a fault alarm.

        ``code`` is the event's value (else the state's); ``at`` when it was reported (else now).
        """
        value = code if code is not None else (state.value("fault_code") if state else None)
        if value is None or value != int(value):
            return
        when = at or self._clock.now()
        if int(value) in flows.ENTRAPMENT_FAULT_CODES:
            await self.signal(
                device, Trigger.FAULT_CODE, at=when, detail={"fault_code": int(value)}
            )
        else:
            await self.db(flows.controller_fault, device_id=device, code=int(value), at=when)

    async def evaluate(self, devices: Sequence[str]) -> None:
        """Start or stop dwell timers from the latest state of these devices."""
        states = await self.db(service.lift_states, device_ids=list(devices))
        await self._evaluate_states(states, devices=devices)

    async def _evaluate_states(self, states: Sequence[Any], *, devices: Sequence[str]) -> None:
        by_device = {s.device_id: s for s in states}
        now = self._clock.now()
        for device in devices:
            state = by_device.get(device)
            condition = flows.dwell_condition(state, now=now) if state is not None else None
            suppressed = flows.dwell_suppressed(state) if state is not None and condition else None
            current = self._dwell.get(device)
            if (
                current is not None
                and current.condition == condition
                and current.suppressed == suppressed
            ):
                continue
            if current is not None:
                if current.task is not None:
                    current.task.cancel()
                del self._dwell[device]
            if condition is None:
                continue
            # remembered until the condition ends, so that it signals once, not on every notice
            if suppressed is not None:
                self._dwell[device] = _Dwell(condition, None, suppressed)
                await self.db(
                    flows.log_suppression,
                    device_id=device,
                    condition=condition,
                    reason=suppressed,
                    at=now,
                )
                continue
            due = condition.since + timedelta(seconds=condition.dwell_s)
            if due <= now:
                # it has held long enough already (found at start, or notices came late): the
                # entrapment began when the dwell ran out (rule R2 counts from then)
                self._dwell[device] = _Dwell(condition, None)
                await self.signal(
                    device,
                    condition.trigger,
                    at=due,
                    detail={"condition_since": condition.since, "dwell_s": condition.dwell_s},
                )
                continue
            task = asyncio.create_task(self._dwell_timer(device, condition))
            self._dwell[device] = _Dwell(condition, task)

    async def _dwell_timer(self, device: str, condition: Condition) -> None:
        try:
            await self._clock.sleep_until(condition.since + timedelta(seconds=condition.dwell_s))
            [state] = await self.db(service.lift_states, device_ids=[device]) or [None]
            now = self._clock.now()
            still = flows.dwell_condition(state, now=now) if state is not None else None
            if (
                still is not None
                and still.trigger is condition.trigger
                and flows.dwell_suppressed(state) is None
            ):
                await self.signal(
                    device,
                    condition.trigger,
                    detail={"condition_since": condition.since, "dwell_s": condition.dwell_s},
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dwell timer of %s failed", device)

    async def signal(
        self,
        device: str,
        trigger: Trigger,
        *,
        at: Any = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Open (or attach to) the elevator's incident, and dispatch when it is new.

        ``at`` is when the entrapment was received (default now): its deadline counts from then.
        """
        opened = await self.db(
            flows.report,
            device_id=device,
            trigger=trigger,
            at=at or self._clock.now(),
            actor="detector",
            detail=detail,
        )
        if opened.created:
            log.warning("entrapment on %s (%s): incident %s", device, trigger, opened.incident.id)
            await self.dispatch(opened.incident.id)

    # -- dispatch and deadlines (rules R2, R4, R5, R6) -------------------------------------------

    async def dispatch(self, incident_id: int) -> None:
        """Dispatch the best remaining candidate of an incident."""
        await self.db(
            flows.dispatch_next,
            incident_id=incident_id,
            now=self._clock.now(),
            estimator=self._estimator,
        )
        await self.refresh(incident_id)

    async def refresh(self, incident_id: int) -> None:
        """Arm the accept and deadline timers an incident needs now; drop the others."""

        def load(conn: Any) -> tuple[Any, Any, bool, Any]:
            incident = service.get_incident(conn, incident_id=incident_id)
            waiting = service.awaiting_answer(conn, incident_id=incident_id)
            steps = service.steps(conn, incident_id=incident_id)
            done = any(s.step is Step.ARRIVED for s in steps) or bool(
                service.breaches(conn, incident_id=incident_id)
            )
            return incident, waiting, done, flows.fire_service_due(steps)

        incident, waiting, arrived_or_breached, fire_service_at = await self.db(load)
        accept_at = waiting.accept_by if (waiting is not None and incident.open) else None
        self._arm(
            ("accept", incident_id),
            key=waiting.id if waiting else None,
            when=accept_at,
            action=lambda: self._accept_timeout(waiting.id),
        )
        deadline = incident.arrival_deadline
        due = deadline if incident.open and not arrived_or_breached else None
        self._arm(
            ("deadline", incident_id),
            key=deadline,
            when=due,
            action=lambda: self.db(
                flows.deadline_passed, incident_id=incident_id, now=self._clock.now()
            ),
        )
        # rule R5: the fire service, staged after the other backup levels
        self._arm(
            ("fire_service", incident_id),
            key=fire_service_at,
            when=fire_service_at if incident.open else None,
            action=lambda: self.db(
                flows.call_fire_service, incident_id=incident_id, now=self._clock.now()
            ),
        )

    def _arm(
        self, name: tuple[str, int], *, key: Any, when: Any, action: Callable[[], Any]
    ) -> None:
        current = self._timers.get(name)
        if when is None:
            if current is not None:
                current[1].cancel()
                del self._timers[name]
            return
        if current is not None and current[0] == key and not current[1].done():
            return
        if current is not None:
            current[1].cancel()
        self._timers[name] = (key, asyncio.create_task(self._timer(name, when, action)))

    async def _timer(self, name: tuple[str, int], when: Any, action: Callable[[], Any]) -> None:
        try:
            await self._clock.sleep_until(when)
            await action()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rescue timer %s failed", name)

    async def _accept_timeout(self, dispatch_id: int) -> None:
        outcome = await self.db(
            flows.accept_timed_out,
            dispatch_id=dispatch_id,
            now=self._clock.now(),
            estimator=self._estimator,
        )
        if outcome is not None and outcome.dispatch is not None:
            await self.refresh(outcome.dispatch.incident_id)

    async def close(self) -> None:
        """Cancel every timer."""
        tasks = [d.task for d in self._dwell.values() if d.task is not None]
        tasks += [t for _, t in self._timers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def coalesce(batch: Sequence[Any]) -> list[Any]:
    """Notices that queued up while we were busy, in the order to handle them: events and
    incident changes first, as they came (an alarm press never waits behind state), then one
    state notice for every device named (the state is read once, at its latest)."""
    first = [n for n in batch if not isinstance(n, notify.StateNotice)]
    devices = sorted({d for n in batch if isinstance(n, notify.StateNotice) for d in n.devices})
    return [*first, notify.StateNotice(tuple(devices))] if devices else first


async def _handle(rescue: Rescue, notice: Any) -> None:
    """Handle one notice; retry while the database is away, then fail (the engine restarts
    the runner, whose start-up scan finds whatever this notice was about)."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            await rescue.on_notice(notice)
            return
        except RescueError as exc:
            log.warning("rescue: %s", exc)
            return
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            if delay is None:
                raise
            log.warning("rescue: database unavailable (%s); retrying in %ss", exc, delay)
            await asyncio.sleep(delay)  # real time: the database comes back in real time


async def detect_and_dispatch(
    *,
    resources: Resources,
    stop: asyncio.Event,
    estimator: TravelEstimator | None = None,
    processed: Callable[[Any], None] | None = None,
) -> None:
    """Listen for ingest and incident notices and act on them until ``stop``.

    ``processed`` (for tests and benchmarks) is called with each notice once it is handled.
    """
    rescue = Rescue(
        pool=resources.db,
        clock=resources.clock,
        estimator=estimator or flows.StraightLineEstimator(),
    )
    try:
        async with resources.listener([notify.EVENTS, notify.STATE, notify.ALERTS]) as listener:
            # LISTEN is in force before the scan, so nothing committed in between is missed
            await rescue.rearm()
            if processed is not None:
                processed(READY)
            inbox: asyncio.Queue[Any] = asyncio.Queue()

            async def pump() -> None:
                async for notice in listener:
                    inbox.put_nowait(notice)

            pumping = asyncio.create_task(pump())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                while not stop.is_set():
                    getting = asyncio.ensure_future(inbox.get())
                    await asyncio.wait(
                        {getting, stopping, pumping}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not getting.done():
                        getting.cancel()
                        if pumping.done() and not stop.is_set():
                            # without notices nothing would be detected: fail, to be restarted
                            raise pumping.exception() or RuntimeError("rescue listener ended")
                        break
                    batch = [getting.result()]
                    while not inbox.empty():
                        batch.append(inbox.get_nowait())
                    for notice in coalesce(batch):
                        await _handle(rescue, notice)
                    if processed is not None:
                        for notice in batch:
                            processed(notice)
            finally:
                stopping.cancel()
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pumping
    finally:
        await rescue.close()


async def run(*, resources: Resources, stop: asyncio.Event) -> None:
    """The compliance engine's rescue runner: detection, dispatch and the alerts workers."""
    await asyncio.gather(
        detect_and_dispatch(resources=resources, stop=stop),
        alerts_scheduled.run(resources=resources, stop=stop),
    )
