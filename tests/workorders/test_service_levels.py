"""Rule S1: the deadlines of each level, in a city and in a province; the strictest profile
wins; lighting and meters run on rule S6's profile."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.workorders.conftest import patrol
from workorders import flows, service
from workorders.models import Level, Targets, Zone

# RULES.md rule S1 (003:L979-1069): respond, escalate after, restore, on site city / province
S1 = {
    Level.SEVERE: (5, 0, 240, 40, 300),
    Level.MAJOR: (10, 30, 240, 60, 360),
    Level.GENERAL: (10, 60, 240, 60, 480),
    Level.NON_FAULT: (10, 60, None, 120, 600),
}


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("zone", [Zone.CITY, Zone.PROVINCE])
def test_each_level_has_its_deadlines_in_a_city_and_in_a_province(world, clock, level, zone):
    # rule S1: every deadline counts from opening, on the injected clock
    device = world.lift if zone is Zone.CITY else world.far_lift
    opened = flows.open_or_repeat(world.conn, source=patrol(device, level=level), at=clock.now())
    order = opened.work_order
    respond, escalate, restore, city, province = S1[level]
    start = clock.now()
    assert opened.created and order.zone is zone and order.level is level
    assert order.respond_by == start + timedelta(minutes=respond)
    assert order.escalate_at == start + timedelta(minutes=escalate)
    assert order.on_site_by == start + timedelta(minutes=city if zone is Zone.CITY else province)
    if restore is None:
        assert order.restore_by is None  # a non-fault restores nothing
    else:
        assert order.restore_by == start + timedelta(minutes=restore)
    # the values in force are recorded with the order (every number is a default)
    assert order.service_level["profiles"] == ["s1-default"]
    assert order.service_level["respond_min"] == respond


def test_the_strictest_of_several_profiles_wins_value_by_value(world, clock):
    # rule S1: a contract naming two profiles gets the strictest value of each target
    service.save_profile(
        world.conn,
        code="tower-premium",
        name="Tower premium",
        targets={
            Level.GENERAL: Targets(
                respond_min=3,
                escalate_after_min=120,
                restore_min=300,
                on_site_city_min=90,
                on_site_province_min=100,
            )
        },
    )
    device = world.fleet.device("lift-premium", site=world.city_site_id)
    today = clock.now().date()
    world.fleet.contract(
        device=device,
        firm=world.firm_id,
        starts_on=today - timedelta(days=1),
        ends_on=today + timedelta(days=365),
        terms={"service_levels": ["s1-default", "tower-premium"]},
    )
    order = flows.open_or_repeat(world.conn, source=patrol(device), at=clock.now()).work_order
    start = clock.now()
    assert order.service_level["profiles"] == ["s1-default", "tower-premium"]
    assert order.respond_by == start + timedelta(minutes=3)  # premium's
    assert order.escalate_at == start + timedelta(minutes=60)  # the default's
    assert order.restore_by == start + timedelta(minutes=240)  # the default's
    assert order.on_site_by == start + timedelta(minutes=60)  # the default's, in the city


def test_strictest_takes_any_restore_deadline_and_refuses_nothing_to_choose_from():
    loose = Targets(10, 60, None, 120, 600)
    tight = Targets(5, 0, 240, 40, 300)
    assert flows.strictest([loose, tight]) == Targets(5, 0, 240, 40, 300)
    assert flows.strictest([loose]).restore_min is None
    with pytest.raises(ValueError):
        flows.strictest([])


def test_a_contract_naming_only_unknown_profiles_falls_back_to_the_default(world, clock):
    device = world.fleet.device("lift-odd", site=world.city_site_id)
    world.fleet.contract(
        device=device,
        firm=world.firm_id,
        starts_on=date(2020, 1, 1),
        ends_on=date(2099, 1, 1),
        terms={"service_levels": "no-such-profile"},
    )
    order = flows.open_or_repeat(world.conn, source=patrol(device), at=clock.now()).work_order
    assert order.service_level["profiles"] == ["s1-default"]


def test_street_lighting_and_meters_run_on_the_general_fault_profile(world, clock):
    # rule S6: general faults dispatched within 24 h and fixed within 24 h of that
    for device in (world.pole, world.meter):
        order = flows.open_or_repeat(
            world.conn, source=patrol(device, level=Level.GENERAL), at=clock.now()
        ).work_order
        assert order.service_level["profiles"] == ["s6-general"]
        assert order.respond_by == clock.now() + timedelta(hours=24)
        assert order.restore_by == clock.now() + timedelta(hours=48)
    # rule L3: an emergency lighting repair is on site within 30 minutes
    emergency = flows.open_or_repeat(
        world.conn, source=patrol(world.pole, level=Level.SEVERE, cause="emergency"), at=clock.now()
    ).work_order
    assert emergency.on_site_by == clock.now() + timedelta(minutes=30)
