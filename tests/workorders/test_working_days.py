"""Rule S3 counts working days: weekends rest unless declared make-up working days (调休),
public holidays rest."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from workorders import flows, service

FRIDAY = date(2026, 9, 25)


def test_working_days_skip_the_weekend():
    assert flows.add_working_days(FRIDAY, 1, overrides={}) == date(2026, 9, 28)  # Monday
    assert flows.add_working_days(FRIDAY, 2, overrides={}) == date(2026, 9, 29)  # Tuesday


def test_a_holiday_does_not_count_and_a_make_up_day_does():
    # National Day week: 1-7 October 2026 rest; Sunday 27 September and Saturday 10 October
    # are make-up working days
    overrides = {date(2026, 10, d): False for d in range(1, 8)}
    overrides |= {date(2026, 9, 27): True, date(2026, 10, 10): True}
    assert flows.add_working_days(FRIDAY, 1, overrides=overrides) == date(2026, 9, 27)  # Sunday
    assert flows.add_working_days(date(2026, 9, 30), 1, overrides=overrides) == date(2026, 10, 8)
    assert flows.add_working_days(date(2026, 9, 30), 3, overrides=overrides) == date(2026, 10, 10)
    with pytest.raises(ValueError):
        flows.add_working_days(FRIDAY, 0, overrides=overrides)


def test_the_deadline_is_the_end_of_the_last_working_day_in_the_jurisdictions_calendar(world):
    # rule S3: a complaint received on Wednesday 30 September (Shanghai) is answered within 2
    # working days: the holiday week does not count, so by the end of Friday 9 October
    for day in range(1, 8):
        service.set_calendar_day(
            world.conn,
            jurisdiction_id=world.jurisdiction_id,
            day=date(2026, 10, day),
            working=False,
            name="National Day",
        )
    received = datetime(2026, 9, 30, 9, 0, tzinfo=UTC)  # 17:00 in Shanghai
    due = flows.working_deadline(
        world.conn,
        jurisdiction_id=world.jurisdiction_id,
        timezone="Asia/Shanghai",
        received_at=received,
        days=2,
    )
    assert due == datetime(2026, 10, 9, 16, 0, tzinfo=UTC)  # midnight after the 9th, Shanghai
