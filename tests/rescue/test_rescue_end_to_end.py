"""End to end (rule R1): a simulated controller's registers → gateway poll → broker → ingest →
detection → dispatch → a webhook delivered to a real HTTP receiver, on one FakeClock."""

import asyncio
import json
import time

from alerts import scheduled as alerts_scheduled
from simulators.models import Fault
from tests.alerts.harness import running, settings_for
from tests.alerts.receivers import WebhookReceiver
from tests.alerts.seed import add_lift, registry, seed
from tests.gateway.conftest import first_polls, fleet_config, tick
from tests.gateway.conftest import running as gateway_running
from tests.ingest.conftest import running_worker
from tests.rescue.crew import crew
from tests.rescue.lift import detector
from vigil import notify


async def _event_handled(progress, device, metric, value, timeout=20.0):
    """Wait until the runner handled ingest's notice of this event."""

    def seen():
        return any(
            isinstance(n, notify.EventNotice)
            and n.device == device
            and n.metric == metric
            and n.value == value
            for n in progress.handled
        )

    async def wait():
        async with progress._changed:
            await progress._changed.wait_for(seen)

    await asyncio.wait_for(wait(), timeout)


async def test_simulated_entrapment_reaches_the_technician_by_webhook(
    sim_elevator, clock, db_url, db, mqtt_url, unique_id, tmp_path, resources_for
):
    world = seed(db)
    lift = sim_elevator.device_id
    registry(db).gateway(unique_id, site=world.city_site_id)
    add_lift(db, world=world, device_id=lift, model=sim_elevator.placement.model, gateway=unique_id)
    config = fleet_config(
        tmp_path,
        gateway_id=unique_id,
        mqtt_url=mqtt_url,
        placements=[sim_elevator.placement],
        report_interval_s=3600,
    )
    with WebhookReceiver() as hook:
        team = crew(db, world=world, start=clock.now(), hook=hook.url(""))
        with running_worker(db_url=db_url, mqtt_url=mqtt_url, clock=clock):
            async with (
                detector(resources_for) as progress,
                resources_for(settings=settings_for()) as resources,
                running(alerts_scheduled.run, resources=resources),
                gateway_running(config, clock) as gateway,
            ):
                await first_polls(gateway)
                await _event_handled(progress, lift, "passengers", 0)
                sim_elevator.inject(Fault.ENTRAPMENT_BETWEEN_FLOORS)
                started = time.monotonic()
                await tick(gateway, clock)
                seen_at = clock.now()  # the poll that saw the car stop between floors, occupied
                # rule R1: the controller's own code 4 (stopped outside the unlocking zone) is an
                # entrapment at once; the 30 s dwell would only confirm it
                # the firm's duty line hears of the alarm, the nearest technician is dispatched
                # gateway, broker, ingest, detection, dispatch and delivery on a busy machine
                received = await hook.wait_for(2, timeout=60)
                [delivered] = [r for r in received if r.path == f"/technician/{team.near}"]
                latency_ms = (delivered.at_monotonic - started) * 1000
                await _event_handled(progress, lift, "passengers", 1)
    incident = db.execute("SELECT * FROM rescue_incidents").fetchone()
    assert db.execute("SELECT count(*) AS n FROM rescue_incidents").fetchone()["n"] == 1
    assert incident["device_id"] == lift
    assert incident["trigger"] == "fault_code"
    assert incident["reported_at"] == seen_at
    assert {r.path for r in received} == {f"/technician/{team.near}", f"/firm/{world.firm_id}"}
    body = json.loads(delivered.body)
    assert body["kind"] == "rescue_dispatch" and body["incident_id"] == incident["id"]
    print(f"\nend to end: poll that saw fault code 4 → technician webhook: {latency_ms:.0f} ms")
