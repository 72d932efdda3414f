import inspect

from compliance.rescue import scheduled
from runtime import engine


def test_the_engine_finds_the_rescue_runner_with_the_agreed_signature():
    found = dict(engine.runners())
    assert found["compliance.rescue.scheduled"] is scheduled.run
    parameters = inspect.signature(scheduled.run).parameters
    assert list(parameters) == ["database_url", "mqtt_url", "clock", "settings", "stop"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert inspect.iscoroutinefunction(scheduled.run)


def test_queued_notices_put_events_first_and_read_state_once():
    from vigil.notify import EventNotice, StateNotice

    press = EventNotice(7, "lift-2", "alarm_button", 1_767_600_000_000, 1.0, 0.0)
    incident = {"kind": "incident", "change": "reported", "id": 3}
    batch = [StateNotice(("meter-1", "lift-1")), press, StateNotice(("lift-2",)), incident]
    assert scheduled.coalesce(batch) == [
        press,
        incident,
        StateNotice(("lift-1", "lift-2", "meter-1")),
    ]
    assert scheduled.coalesce([press]) == [press]
