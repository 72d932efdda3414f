import json

from alerts import scheduled, service
from alerts.flows import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from alerts.models import DeliveryStatus
from tests.alerts.harness import Notices, attempt, running, settings_for
from tests.alerts.receivers import SmtpReceiver, WebhookReceiver
from tests.alerts.seed import cover_roster, seed
from vigil.services import free_port
from vigil.testing import MqttProbe

SECRET = "s3cret-for-tests"


def _raise(db, world, clock, type="maintenance_overdue"):
    return service.raise_alarm(
        db,
        source_type="device",
        source_id=world.city_lift,
        type=type,
        severity="major",
        message="half-monthly maintenance overdue",
        audience=["firm", "user_unit", "manufacturer"],
        at=clock.now(),
    )


async def test_every_channel_delivers_and_every_delivery_is_logged(
    db_url, db, clock, mqtt_url, resources_for
):
    world = seed(db)
    cover_roster(db, world=world, start=clock.now())
    with (
        WebhookReceiver() as hook,
        SmtpReceiver() as smtp,
        MqttProbe(mqtt_url, "vigil/alerts/#") as probe,
    ):
        service.add_contact(
            db,
            party_type="firm",
            party_id=world.firm_id,
            audience="firm",
            channel="webhook",
            address=hook.url(),
        )
        service.add_contact(
            db,
            party_type="user_unit",
            party_id=world.user_unit_id,
            audience="user_unit",
            channel="email",
            address="safety@tower.example",
        )
        service.add_contact(
            db,
            party_type="manufacturer",
            party_id=world.manufacturer_id,
            audience="manufacturer",
            channel="mqtt",
            address=f"manufacturer/{world.manufacturer_id}",
        )
        service.add_contact(
            db,
            party_type="firm",
            party_id=world.firm_id,
            audience="firm",
            channel="console",
            address=f"firm:{world.firm_id}",
        )
        settings = settings_for(webhook_secret=SECRET, smtp_port=smtp.port)
        async with (
            Notices(db_url) as notices,
            resources_for(settings=settings) as resources,
            running(scheduled.run, resources=resources),
        ):
            alarm = _raise(db, world, clock)
            await notices.wait(attempt(status="delivered"), count=4)
            [request] = await hook.wait_for(1)
            [(rcpt, mail)] = await smtp.wait_for(1)
            [message] = probe.wait_for(1)
            console = [n for n in notices.seen if n.get("kind") == "notification"]

    body = json.loads(request.body)
    assert body["alarm_id"] == alarm.id and body["type"] == "maintenance_overdue"
    # the webhook is signed over timestamp and body with the shared secret
    assert verify(
        secret=SECRET,
        timestamp=request.headers[TIMESTAMP_HEADER],
        body=request.body,
        signature=request.headers[SIGNATURE_HEADER],
    )
    assert not verify(
        secret="wrong",
        timestamp=request.headers[TIMESTAMP_HEADER],
        body=request.body,
        signature=request.headers[SIGNATURE_HEADER],
    )
    assert rcpt == ["safety@tower.example"]
    assert "maintenance_overdue" in mail["Subject"]
    assert "half-monthly maintenance overdue" in mail.get_payload()
    assert message.topic == f"vigil/alerts/manufacturer/{world.manufacturer_id}"
    assert json.loads(message.payload)["alarm_id"] == alarm.id
    assert console and console[0]["address"] == f"firm:{world.firm_id}"
    logged = service.deliveries(db, alarm_id=alarm.id)
    assert {d.channel.value for d in logged} == {"webhook", "email", "mqtt", "console"}
    assert all(d.status is DeliveryStatus.DELIVERED and d.attempts == 1 for d in logged)
    for delivery in logged:
        [log] = service.delivery_attempts(db, delivery_id=delivery.id)
        assert log.ok


async def test_webhook_is_retried_with_backoff_until_it_succeeds(db_url, db, clock, resources_for):
    world = seed(db)
    cover_roster(db, world=world, start=clock.now())
    with WebhookReceiver(statuses=[503, 503]) as hook:
        service.add_contact(
            db,
            party_type="firm",
            party_id=world.firm_id,
            audience="firm",
            channel="webhook",
            address=hook.url(),
        )
        settings = settings_for(retry_base_s=10, retry_max_attempts=5)
        start = clock.now()
        async with (
            Notices(db_url) as notices,
            resources_for(settings=settings) as resources,
            running(scheduled.run, resources=resources),
        ):
            alarm = _raise(db, world, clock)
            await notices.wait(attempt(ok=False), count=1)
            clock.advance(10)  # first retry after 10 s
            await notices.wait(attempt(ok=False), count=2)
            clock.advance(19)  # the second waits 20 s: not yet
            clock.advance(1)
            await notices.wait(attempt(status="delivered"))
            assert len(await hook.wait_for(3)) == 3
    [delivery] = service.deliveries(db, alarm_id=alarm.id)
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.attempts == 3
    log = service.delivery_attempts(db, delivery_id=delivery.id)
    assert [(a.ok, a.detail, (a.at - start).total_seconds()) for a in log] == [
        (False, "HTTP 503", 0.0),
        (False, "HTTP 503", 10.0),
        (True, "HTTP 200", 30.0),
    ]


async def test_permanent_failure_gives_up_and_is_logged(db_url, db, clock, resources_for):
    world = seed(db)
    cover_roster(db, world=world, start=clock.now())
    with WebhookReceiver(statuses=[410]) as hook:
        service.add_contact(
            db,
            party_type="firm",
            party_id=world.firm_id,
            audience="firm",
            channel="webhook",
            address=hook.url(),
        )
        async with (
            Notices(db_url) as notices,
            resources_for(settings=settings_for()) as resources,
            running(scheduled.run, resources=resources),
        ):
            alarm = _raise(db, world, clock)
            await notices.wait(attempt(status="failed"))
    [delivery] = service.deliveries(db, alarm_id=alarm.id)
    assert delivery.status is DeliveryStatus.FAILED and delivery.last_error == "HTTP 410"


async def test_a_failing_or_hanging_channel_never_blocks_the_others(
    db_url, db, clock, resources_for
):
    world = seed(db)
    cover_roster(db, world=world, start=clock.now())
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    with WebhookReceiver() as slow, SmtpReceiver() as smtp:
        slow.hold.clear()  # this webhook hangs until we let it go
        for channel, address in (("webhook", dead), ("webhook", slow.url())):
            service.add_contact(
                db,
                party_type="firm",
                party_id=world.firm_id,
                audience="firm",
                channel=channel,
                address=address,
            )
        service.add_contact(
            db,
            party_type="user_unit",
            party_id=world.user_unit_id,
            audience="user_unit",
            channel="email",
            address="safety@tower.example",
        )
        settings = settings_for(smtp_port=smtp.port, retry_base_s=60)
        async with (
            Notices(db_url) as notices,
            resources_for(settings=settings) as resources,
            running(scheduled.run, resources=resources),
        ):
            alarm = _raise(db, world, clock)
            # the email and the dead webhook's first attempt are logged while one webhook hangs
            await smtp.wait_for(1)
            await notices.wait(attempt(ok=True), count=1)
            await notices.wait(attempt(ok=False), count=1)
            by_address = {d.address: d for d in service.deliveries(db, alarm_id=alarm.id)}
            assert by_address["safety@tower.example"].status is DeliveryStatus.DELIVERED
            assert by_address[dead].status is DeliveryStatus.PENDING
            assert by_address[dead].attempts == 1
            assert by_address[slow.url()].attempts == 0
            slow.hold.set()
            await notices.wait(attempt(ok=True), count=2)
    by_address = {d.address: d for d in service.deliveries(db, alarm_id=alarm.id)}
    assert by_address[slow.url()].status is DeliveryStatus.DELIVERED
    assert "ConnectError" in by_address[dead].last_error
