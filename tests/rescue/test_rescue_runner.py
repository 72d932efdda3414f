import inspect

from compliance import engine
from compliance.rescue import scheduled


def test_the_engine_finds_the_rescue_runner_with_the_agreed_signature():
    found = dict(engine.runners())
    assert found["compliance.rescue.scheduled"] is scheduled.run
    parameters = inspect.signature(scheduled.run).parameters
    assert list(parameters) == ["database_url", "mqtt_url", "clock", "settings", "stop"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert inspect.iscoroutinefunction(scheduled.run)
