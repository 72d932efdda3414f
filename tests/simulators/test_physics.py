"""Meter and lighting physics on a FakeClock: daily profiles, exact integrals, dusk to dawn."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from simulators.energy_meter import EnergyMeter
from simulators.lighting import StreetLight
from simulators.water_meter import WaterMeter
from vigil.clock import FakeClock
from vigil.wire import CommandAction

MIDNIGHT_LOCAL = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)  # 00:00 at UTC+8


def test_meter_energy_is_the_integral_of_its_daily_load():
    clock = FakeClock(MIDNIGHT_LOCAL)
    meter = EnergyMeter(device_id="m", clock=clock, mean_power_w=4_000, ripple=False)
    clock.advance(timedelta(days=1))
    assert meter.values()["import_energy"] == pytest.approx(4_000 * 24 / 1000)  # 96 kWh


def test_meter_load_peaks_in_the_evening():
    clock = FakeClock(MIDNIGHT_LOCAL)
    meter = EnergyMeter(device_id="m", clock=clock, ripple=False)
    by_hour = {}
    for hour in range(24):
        by_hour[hour] = meter.values()["power_total"]
        clock.advance(3600)
    assert max(by_hour, key=by_hour.get) in (18, 19, 20)
    assert by_hour[4] < 0.6 * by_hour[19]


def test_meter_counters_do_not_depend_on_how_often_it_is_read():
    polled, jumped = FakeClock(MIDNIGHT_LOCAL), FakeClock(MIDNIGHT_LOCAL)
    a = EnergyMeter(device_id="m", clock=polled, seed=3)
    b = EnergyMeter(device_id="m", clock=jumped, seed=3)
    for _ in range(600):
        polled.advance(61)
        a.values()
    jumped.advance(600 * 61)
    assert a.values()["import_energy"] == pytest.approx(b.values()["import_energy"], rel=1e-9)
    assert a.values() == pytest.approx(b.values(), rel=1e-9)


def test_water_volume_follows_the_demand_curve_and_the_valve():
    clock = FakeClock(MIDNIGHT_LOCAL)
    meter = WaterMeter(device_id="w", clock=clock, mean_flow_m3h=0.5)
    clock.advance(timedelta(days=1))
    assert meter.values()["forward_volume"] == pytest.approx(12.0)
    meter.set_valve(open_=False)
    clock.advance(timedelta(hours=5))
    values = meter.values()
    assert values["forward_volume"] == pytest.approx(12.0) and values["flow_rate"] == 0
    assert values["valve_open"] == 0


def test_a_scheduled_light_burns_from_its_on_time_to_its_off_time():
    clock = FakeClock(MIDNIGHT_LOCAL + timedelta(hours=12))  # noon local
    light = StreetLight(
        device_id="p", clock=clock, photocell=False, on_at=time(18, 30), off_at=time(6, 0)
    )
    assert light.values()["lamp_on"] == 0
    clock.advance(timedelta(hours=6, minutes=29))
    assert light.values()["lamp_on"] == 0
    clock.advance(60)
    assert light.values()["lamp_on"] == 1  # 18:30 local
    clock.advance(timedelta(days=3))
    values = light.values()
    assert values["burning_hours"] == pytest.approx(3 * 11.5, abs=0.05)
    assert values["switch_on_count"] == 4


def test_a_photocell_light_follows_the_lux_and_the_seasons():
    def night_hours(start: datetime) -> float:
        clock = FakeClock(start)
        light = StreetLight(device_id="p", clock=clock)
        clock.advance(timedelta(days=1))
        return light.values()["burning_hours"]

    winter, summer = (
        night_hours(datetime(2026, 12, 20, 16, tzinfo=UTC)),
        night_hours(MIDNIGHT_LOCAL),
    )
    assert winter > 14 and summer < 10  # long winter nights
    clock = FakeClock(MIDNIGHT_LOCAL + timedelta(hours=12))
    light = StreetLight(device_id="p", clock=clock)
    assert light.values()["lux"] > 50_000 and light.values()["lamp_on"] == 0


def test_power_follows_the_dim_level_and_zero_opens_the_relay():
    clock = FakeClock(MIDNIGHT_LOCAL)  # midnight: dark
    light = StreetLight(device_id="p", clock=clock, rated_w=120)
    light.command(CommandAction.DIM, value=25)
    assert light.values()["lamp_power"] == 30.0
    light.command(CommandAction.DIM, value=0)
    assert light.values()["lamp_on"] == 0 and light.values()["lamp_power"] == 0
    light.command(CommandAction.DIM, value=100)
    values = light.values()
    assert values["lamp_on"] == 1 and values["switch_on_count"] == 1  # switched on again
