from alerts import service
from runtime.cli import main
from tests.alerts.seed import seed


def test_list_acknowledge_and_clear_from_the_shell(db_url, db, clock, monkeypatch, capsys):
    world = seed(db)
    alarm = service.raise_alarm(
        db,
        source_type="device",
        source_id=world.city_lift,
        type="maintenance_overdue",
        severity="major",
        message="overdue",
        audience=["firm"],
        at=clock.now(),
    )
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    assert main(["alerts", "list"]) == 0
    assert "maintenance_overdue" in capsys.readouterr().out
    assert main(["alerts", "ack", str(alarm.id), "--by", "li"]) == 0
    assert service.get_alarm(db, alarm_id=alarm.id).acknowledged_by == "li"
    assert main(["alerts", "clear", str(alarm.id), "--by", "li"]) == 0
    # a cleared alarm cannot be acknowledged: a clear error, and nothing changes
    assert main(["alerts", "ack", str(alarm.id), "--by", "li"]) == 1
    assert "cleared" in capsys.readouterr().err
    assert main(["alerts", "ack", "999999", "--by", "li"]) == 1
    # rule R3: a firm with no roster has one gap over the whole horizon
    assert main(["alerts", "gaps", str(world.firm_id), "--hours", "8"]) == 1
    assert "1 gap(s) in the next 8 h" in capsys.readouterr().out
