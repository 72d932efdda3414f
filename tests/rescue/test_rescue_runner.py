import inspect

from compliance.rescue import scheduled
from runtime import engine


def test_the_engine_finds_the_rescue_runner_with_the_agreed_signature():
    found = dict(engine.runners())
    assert found["compliance.rescue.scheduled"] is scheduled.run
    # every runner takes the process's resources (pools, MQTT client, clock, settings), no URL
    for name, run in found.items():
        parameters = inspect.signature(run).parameters
        assert list(parameters) == ["resources", "stop"], name
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values()), name
        assert inspect.iscoroutinefunction(run), name


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
