from datetime import timedelta

import psycopg
import pytest

from alerts import scheduled, service
from alerts.models import AlarmState
from fleet.factory import FleetFactory
from tests.alerts.seed import add_technician, seed

H = timedelta(hours=1)


def test_gaps_in_the_roster_are_flagged_and_cleared_when_covered(db, clock):
    # rule R3
    world = seed(db)
    now = clock.now()
    wang = add_technician(db, firm_id=world.firm_id, name="wang", latitude=31.2, longitude=121.4)
    zhao = add_technician(db, firm_id=world.firm_id, name="zhao", latitude=31.2, longitude=121.4)
    roster = service.create_roster(db, firm_id=world.firm_id, name="duty")
    service.add_shift(db, roster_id=roster, technician_id=wang, start=now, end=now + 8 * H)
    # overlapping shifts are fine; the hole from 12:00 to 16:00 is not
    service.add_shift(db, roster_id=roster, technician_id=zhao, start=now + 6 * H, end=now + 12 * H)
    service.add_shift(
        db, roster_id=roster, technician_id=wang, start=now + 16 * H, end=now + 30 * H
    )
    gaps = service.roster_gaps(db, firm_id=world.firm_id, start=now, end=now + 24 * H)
    assert [(g.start - now, g.end - now) for g in gaps] == [(12 * H, 16 * H)]
    assert service.on_call(db, firm_id=world.firm_id, at=now + 7 * H) == sorted([wang, zhao])
    assert service.on_call(db, firm_id=world.firm_id, at=now + 13 * H) == []

    assert scheduled.check_rosters(db, now=now, horizon=24 * H) == 1
    [alarm] = service.list_alarms(db, type="roster_gap")
    assert alarm.source_id == str(world.firm_id) and alarm.state is AlarmState.ACTIVE
    assert len(alarm.details["gaps"]) == 1

    service.add_shift(
        db, roster_id=roster, technician_id=zhao, start=now + 12 * H, end=now + 16 * H
    )
    assert scheduled.check_rosters(db, now=now, horizon=24 * H) == 0
    assert service.get_alarm(db, alarm_id=alarm.id).state is AlarmState.CLEARED


def test_shift_rules_are_enforced(db, clock):
    world = seed(db)
    now = clock.now()
    wang = add_technician(db, firm_id=world.firm_id, name="wang", latitude=31.2, longitude=121.4)
    roster = service.create_roster(db, firm_id=world.firm_id, name="duty")
    with pytest.raises(ValueError):
        service.add_shift(db, roster_id=roster, technician_id=wang, start=now, end=now)
    service.add_shift(db, roster_id=roster, technician_id=wang, start=now, end=now + 8 * H)
    with pytest.raises(psycopg.errors.ExclusionViolation):
        service.add_shift(db, roster_id=roster, technician_id=wang, start=now + H, end=now + 2 * H)
    other_firm = FleetFactory(db, at=now).firm("Other")
    stranger = add_technician(db, firm_id=other_firm, name="li", latitude=31.2, longitude=121.4)
    # a technician of another firm cannot be on this firm's roster
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        service.add_shift(db, roster_id=roster, technician_id=stranger, start=now, end=now + H)
