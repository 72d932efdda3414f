"""Rules L1, L2 and E2: conditions read from the latest device state raise and clear alarms."""

from datetime import UTC, datetime, timedelta

import pytest

from alerts import service as alerts
from compliance.conditions import flows
from compliance.log import service as compliance_log
from fleet.factory import FleetFactory

NOW = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)


@pytest.fixture
def site(db):
    return FleetFactory(db, at=NOW).site(latitude=31.2, longitude=121.4)


def device(db, site, device_id, kind, **state):
    FleetFactory(db, at=NOW).device(device_id, site=site, kind=kind, model="m")
    set_state(db, device_id, **state)


def set_state(db, device_id, **state):
    for metric, value in state.items():
        db.execute(
            "INSERT INTO device_state (device_id, metric, value, ts) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (device_id, metric) DO UPDATE SET value = excluded.value",
            (device_id, metric, value, NOW),
        )


def open_types(db, device_id):
    return {
        t
        for t in (
            "lamp_failure",
            "mast_relamping",
            "voltage_out_of_band",
            "reverse_energy",
            "reverse_flow",
        )
        if alerts.open_alarm(db, source_type="device", source_id=device_id, type=t)
    }


def test_lit_lamp_drawing_nothing_raises_then_clears_lamp_failure(db, site):
    # rule L1
    device(db, site, "pole-1", "light_pole", lamp_on=1, lamp_power=0.0)
    device(db, site, "pole-2", "light_pole", lamp_on=1, lamp_power=148.0)
    device(db, site, "pole-3", "light_pole", lamp_on=0, lamp_power=0.0)  # daytime: off is fine
    changed = flows.check(db, now=NOW)
    assert [(f.device_id, f.condition.type) for f in changed] == [("pole-1", "lamp_failure")]
    assert open_types(db, "pole-1") == {"lamp_failure"}
    assert open_types(db, "pole-2") == open_types(db, "pole-3") == set()
    alarm = alerts.open_alarm(db, source_type="device", source_id="pole-1", type="lamp_failure")
    assert alarm.details["rule"] == "L1"
    assert alarm.details["thresholds"]["lamp_failed_below_w"] == 1.0

    # a second check changes nothing: no re-trigger of the open alarm
    assert flows.check(db, now=NOW + timedelta(minutes=1)) == []
    set_state(db, "pole-1", lamp_power=150.0)
    changed = flows.check(db, now=NOW + timedelta(minutes=2))
    assert [(f.device_id, f.holds) for f in changed] == [("pole-1", False)]
    assert open_types(db, "pole-1") == set()
    kinds = [e.kind for e in compliance_log.entries(db)]
    assert kinds == ["lamp_failure_raised", "lamp_failure_cleared"]


def test_mast_with_forty_percent_out_needs_relamping(db, site):
    # rule L2: 3 of 8 out is 37.5% (a lamp failure only); 4 of 8 is 50%
    device(db, site, "mast-1", "high_mast", lamp_on=1, lamp_power=900, lamps_total=8, lamps_out=3)
    flows.check(db, now=NOW)
    assert open_types(db, "mast-1") == {"lamp_failure"}
    set_state(db, "mast-1", lamps_out=4)
    flows.check(db, now=NOW)
    assert open_types(db, "mast-1") == {"lamp_failure", "mast_relamping"}


def test_meter_voltage_band_and_reverse_energy(db, site):
    # rule E2: +-10% of 230 V is 207..253 V
    device(
        db,
        site,
        "m-ok",
        "energy_meter",
        voltage_l1=230,
        voltage_l2=252,
        voltage_l3=208,
        power_total=1500,
    )
    device(
        db,
        site,
        "m-sag",
        "energy_meter",
        voltage_l1=230,
        voltage_l2=200,
        voltage_l3=230,
        power_total=1500,
    )
    device(
        db,
        site,
        "m-rev",
        "energy_meter",
        voltage_l1=230,
        voltage_l2=230,
        voltage_l3=230,
        power_total=-800,
    )
    flows.check(db, now=NOW)
    assert open_types(db, "m-ok") == set()
    assert open_types(db, "m-sag") == {"voltage_out_of_band"}
    assert open_types(db, "m-rev") == {"reverse_energy"}


def test_a_check_can_be_limited_to_the_devices_that_changed(db, site):
    device(db, site, "pole-1", "light_pole", lamp_on=1, lamp_power=0.0)
    device(db, site, "pole-2", "light_pole", lamp_on=1, lamp_power=0.0)
    flows.check(db, now=NOW, devices=["pole-2"])
    assert open_types(db, "pole-1") == set()
    assert open_types(db, "pole-2") == {"lamp_failure"}


def test_water_flowing_backwards_raises_reverse_flow_until_it_stops(db, site):
    # rule E2: reverse flow on a water meter (possible tampering)
    device(db, site, "w-rev", "water_meter", flow_rate=-1.5)
    device(db, site, "w-ok", "water_meter", flow_rate=2.0)
    changed = flows.check(db, now=NOW)
    assert [(f.device_id, f.condition.type) for f in changed] == [("w-rev", "reverse_flow")]
    assert open_types(db, "w-rev") == {"reverse_flow"} and open_types(db, "w-ok") == set()
    alarm = alerts.open_alarm(db, source_type="device", source_id="w-rev", type="reverse_flow")
    assert alarm.details["rule"] == "E2" and alarm.details["readings"] == {"flow_rate": -1.5}
    set_state(db, "w-rev", flow_rate=0.5)
    changed = flows.check(db, now=NOW + timedelta(minutes=1))
    assert [(f.device_id, f.holds) for f in changed] == [("w-rev", False)]
    assert open_types(db, "w-rev") == set()


def _counter_alarms(db, device_id):
    found = alerts.open_alarm(
        db, source_type="device", source_id=device_id, type="counter_integrity"
    )
    return found


def test_a_counter_going_backwards_is_a_data_quality_event_and_an_alarm(db, site):
    # rule E4: cumulative counters never go backwards
    FleetFactory(db, at=NOW).device("m-cnt", site=site, kind="energy_meter", model="sdm630")
    set_state(db, "m-cnt", import_energy=100.0)
    assert flows.check_counters(db, now=NOW) == []  # the first mark
    set_state(db, "m-cnt", import_energy=120.0)
    assert flows.check_counters(db, now=NOW) == []
    set_state(db, "m-cnt", import_energy=3.5)
    [drop] = flows.check_counters(db, now=NOW)
    assert (drop["device_id"], drop["metric"], drop["from"], drop["to"]) == (
        "m-cnt",
        "import_energy",
        120.0,
        3.5,
    )
    alarm = _counter_alarms(db, "m-cnt")
    assert alarm is not None and alarm.details["rule"] == "E4"
    assert alarm.details["thresholds"]["rollover_share"] == 0.9  # the value in force, recorded
    [entry] = compliance_log.entries(
        db, subject_type="device", subject_id="m-cnt", kind="data_quality.counter_drop"
    )
    assert entry.body["from"] == 120.0 and entry.body["to"] == 3.5
    # counting on from the new base is no new drop
    set_state(db, "m-cnt", import_energy=4.0)
    assert flows.check_counters(db, now=NOW) == []
    assert _counter_alarms(db, "m-cnt").trigger_count == 1


def test_a_counter_wrapping_past_its_register_is_a_rollover_not_a_drop(db, site):
    # rule E4: the lift controller's trip counter is a uint32: it wraps at 4294967295
    FleetFactory(db, at=NOW).device(
        "lift-wrap", site=site, kind="elevator", model="lift-controller"
    )
    set_state(db, "lift-wrap", trip_count=4_294_967_000.0)
    flows.check_counters(db, now=NOW)
    set_state(db, "lift-wrap", trip_count=12.0)
    assert flows.check_counters(db, now=NOW) == []
    assert _counter_alarms(db, "lift-wrap") is None
    # a drop that is no wrap is one
    set_state(db, "lift-wrap", trip_count=5.0)
    assert [d["metric"] for d in flows.check_counters(db, now=NOW)] == ["trip_count"]


def test_thresholds_come_from_the_policy_in_force_and_are_recorded(db, site):
    # every threshold is a default: a jurisdiction's and a device's own values override it
    from compliance.conditions import service

    make = FleetFactory(db, at=NOW)
    strict = make.site(
        code="strict-site",
        user_unit=make.user_unit("Strict unit"),
        jurisdiction=make.jurisdiction("strict"),
    )
    jurisdiction = db.execute(
        "SELECT jurisdiction_id FROM sites WHERE id = %s", (strict,)
    ).fetchone()
    service.set_policy(db, jurisdiction_id=jurisdiction["jurisdiction_id"], relamp_share=0.25)
    device(
        db,
        strict,
        "mast-strict",
        "high_mast",
        lamp_on=1,
        lamp_power=900,
        lamps_total=8,
        lamps_out=3,
    )
    device(
        db, site, "mast-default", "high_mast", lamp_on=1, lamp_power=900, lamps_total=8, lamps_out=3
    )
    device(db, site, "pole-dim", "light_pole", lamp_on=1, lamp_power=15.0)
    service.set_policy(db, device_id="pole-dim", lamp_failed_below_w=20.0)
    flows.check(db, now=NOW)
    # 3 of 8 out: 37.5 %, under the default 40 %, over the strict jurisdiction's 25 %
    assert "mast_relamping" in open_types(db, "mast-strict")
    assert "mast_relamping" not in open_types(db, "mast-default")
    relamp = alerts.open_alarm(
        db, source_type="device", source_id="mast-strict", type="mast_relamping"
    )
    assert relamp.details["thresholds"]["relamp_share"] == 0.25
    # a 15 W draw is a failed lamp where the device's own policy says below 20 W
    failed = alerts.open_alarm(db, source_type="device", source_id="pole-dim", type="lamp_failure")
    assert failed.details["thresholds"]["lamp_failed_below_w"] == 20.0
    with pytest.raises(Exception, match="needs every value"):
        service.set_policy(db, relamp_share=None)
    with pytest.raises(ValueError, match="no such threshold"):
        service.set_policy(db, device_id="pole-dim", colour=3)


def test_a_meter_silent_for_three_reading_periods_has_lost_communication(db, site):
    # rule E1: read at least every 300 s by default; silent for 3 periods raises, a reading
    # clears; nothing fills the gap
    device(db, site, "m-quiet", "energy_meter", voltage_l1=230.0, power_total=100.0)
    device(db, site, "m-never", "energy_meter")  # registered, never heard
    assert flows.check(db, now=NOW + timedelta(seconds=900)) == []
    later = NOW + timedelta(seconds=901)
    changed = flows.check(db, now=later)
    assert sorted((f.device_id, f.condition.type) for f in changed) == [
        ("m-never", "communication_loss"),
        ("m-quiet", "communication_loss"),
    ]
    alarm = alerts.open_alarm(
        db, source_type="device", source_id="m-quiet", type="communication_loss"
    )
    assert alarm.details["rule"] == "E1" and alarm.details["readings"]["silent_s"] == 901.0
    assert alarm.details["thresholds"]["missed_readings"] == 3
    rows = db.execute("SELECT count(*) AS n FROM telemetry_rows").fetchone()["n"]
    assert rows == 0  # the gap stays a gap
    db.execute(
        "UPDATE device_state SET ts = %s WHERE device_id = 'm-quiet'", (later,)
    )  # a reading arrives
    changed = flows.check(db, now=later + timedelta(seconds=1), devices=["m-quiet"])
    assert [(f.device_id, f.holds) for f in changed] == [("m-quiet", False)]
    assert alerts.open_alarm(
        db, source_type="device", source_id="m-never", type="communication_loss"
    )


def test_lamp_power_and_supply_voltage_out_of_band(db, site):
    # rule L5 (TALQ lampPowerTooHigh/Low, supplyVoltageTooHigh/Low): power against rated x dim
    # level where the device's policy gives the rated power; supply voltage in the E2 band
    from compliance.conditions import service

    device(
        db,
        site,
        "pole-hi",
        "light_pole",
        lamp_on=1,
        dim_level=50,
        lamp_power=110.0,
        supply_voltage=231.0,
    )
    device(
        db,
        site,
        "pole-ok",
        "light_pole",
        lamp_on=1,
        dim_level=50,
        lamp_power=76.0,
        supply_voltage=229.0,
    )
    device(
        db,
        site,
        "pole-sag",
        "light_pole",
        lamp_on=1,
        dim_level=100,
        lamp_power=150.0,
        supply_voltage=190.0,
    )
    for pole in ("pole-hi", "pole-ok", "pole-sag"):
        service.set_policy(db, device_id=pole, lamp_rated_w=150.0)
    device(db, site, "pole-unrated", "light_pole", lamp_on=1, dim_level=50, lamp_power=300.0)
    changed = flows.check(db, now=NOW)
    assert sorted((f.device_id, f.condition.type) for f in changed) == [
        ("pole-hi", "lamp_power_out_of_band"),  # 110 W against 75 W +- 20 %
        ("pole-sag", "supply_voltage_out_of_band"),  # 190 V against 230 V +- 10 %
    ]
    alarm = alerts.open_alarm(
        db, source_type="device", source_id="pole-hi", type="lamp_power_out_of_band"
    )
    assert alarm.details["rule"] == "L5" and alarm.details["readings"]["expected_w"] == 75.0
    assert alarm.details["thresholds"]["lamp_rated_w"] == 150.0


def _hourly_counter(db, device_id, metric, start, values):
    """Hourly roll-ups of a counter ending at ``values[i]`` in hour ``start + i``."""
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO telemetry_hourly (device_id, metric, bucket, samples, min_value, "
            "max_value, avg_value, first_value, last_value) VALUES (%s, %s, %s, 60, %s, %s, %s, "
            "%s, %s)",
            [
                (device_id, metric, start + timedelta(hours=i), v, v, v, v, v)
                for i, v in enumerate(values)
            ],
        )


def test_an_hour_far_outside_the_meters_own_consumption_is_an_anomaly(db, site):
    # rule E3: robust z-score (median/MAD) of the last complete hour over the meter's history,
    # judged only once it has 72 hours of it
    import numpy as np

    FleetFactory(db, at=NOW).device("m-e3", site=site, kind="energy_meter", model="sdm630")
    start = NOW.replace(minute=0) - timedelta(hours=81)  # the last value: the 09:00 hour
    usage = [1.0 + 0.1 * (i % 3) for i in range(79)] + [9.0]  # the last hour: 9 kWh
    _hourly_counter(db, "m-e3", "import_energy", start, list(np.cumsum([100.0, *usage])))
    [finding] = flows.check_consumption(db, now=NOW)
    assert (finding.device_id, finding.holds) == ("m-e3", True)
    alarm = alerts.open_alarm(
        db, source_type="device", source_id="m-e3", type="consumption_anomaly"
    )
    assert alarm.details["rule"] == "E3" and alarm.details["readings"]["consumption"] == 9.0
    assert alarm.details["thresholds"]["anomaly_z"] == 3.5
    # a normal next hour clears it
    _hourly_counter(db, "m-e3", "import_energy", NOW.replace(minute=0), [100.0 + sum(usage) + 1.1])
    [cleared] = flows.check_consumption(db, now=NOW + timedelta(hours=1))
    assert cleared.holds is False


def test_consumption_is_not_judged_without_enough_history(db, site):
    FleetFactory(db, at=NOW).device("m-new", site=site, kind="energy_meter", model="sdm630")
    start = NOW.replace(minute=0) - timedelta(hours=10)
    _hourly_counter(db, "m-new", "import_energy", start, [float(v) for v in range(0, 100, 10)])
    assert flows.check_consumption(db, now=NOW) == []


def test_robust_z_of_a_flat_history():
    import numpy as np

    assert flows.robust_z(np.array([2.0, 2.0, 2.0]), 2.0) == 0.0
    assert flows.robust_z(np.array([2.0, 2.0, 2.0]), 2.5) == float("inf")
    assert flows.robust_z(np.array([1.0, 2.0, 3.0]), 2.0) == 0.0


def test_a_lamp_that_should_be_lit_is_judged_by_photocell_or_schedule_not_by_its_relay(db, site):
    # rule L1: after dark a pole whose relay stayed open has failed too; in daylight a closed
    # relay drawing nothing has not (nothing should burn); a pole on a schedule follows it
    from compliance.conditions import service

    device(db, site, "pole-stuck", "light_pole", lamp_on=0, lamp_power=0.0, lux=2.0)
    device(db, site, "pole-day", "light_pole", lamp_on=1, lamp_power=0.0, lux=20_000.0)
    device(db, site, "pole-timed", "light_pole", lamp_on=0, lamp_power=0.0, lux=20_000.0)
    # 10:30 UTC is 18:30 in Shanghai: inside a 18:00-06:00 schedule, across midnight
    service.set_policy(db, device_id="pole-timed", lit_from_h=18.0, lit_until_h=6.0)
    changed = flows.check(db, now=NOW)
    assert sorted(f.device_id for f in changed if f.condition.type == "lamp_failure") == [
        "pole-stuck",
        "pole-timed",
    ]
    assert "lamp_failure" not in open_types(db, "pole-day")
    # at 14:00 in Shanghai the schedule says off: the timed pole is no longer failed
    changed = flows.check(db, now=NOW - timedelta(hours=4, minutes=30))
    assert [(f.device_id, f.holds) for f in changed if f.device_id == "pole-timed"] == [
        ("pole-timed", False)
    ]
