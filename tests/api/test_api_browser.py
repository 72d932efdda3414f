"""The console in a real headless Chromium (Debian's), driven by Playwright: nothing mocked."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.api.conftest import PASSWORD
from tests.api.test_api_alarms import raise_alarms
from tests.api.test_api_live import change_state

CHROMIUM = os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SHOTS = os.environ.get("VIGIL_SCREENSHOTS")  # a folder to save screenshots in, when set

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium; scripts/ensure-services.sh installs it where apt-get can."""
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        pytest.skip(f"no Chromium at {CHROMIUM} and it could not be installed (apt-get chromium)")
    with playwright_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser, running_api):
    """A fresh browser page on the console, with short waits."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    # generous: on a busy 2-core machine Swagger UI alone takes over 10 s to render the API
    page.set_default_timeout(60_000)
    page.goto(f"{running_api.url}/")
    try:
        yield page
    finally:
        context.close()


def log_in(page, username: str) -> None:
    """Fill the login form and wait for the console."""
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#live.on")  # the live stream is subscribed


def shot(page, name: str) -> None:
    """Save a screenshot when VIGIL_SCREENSHOTS names a folder."""
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def test_wrong_password_shows_an_error(page):
    page.fill("input[name=username]", "disp_a")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert page.wait_for_selector("#login-error:has-text('wrong username')")


def test_fleet_grid_updates_live_and_alarm_is_acknowledged(page, db_url, fleet):
    log_in(page, "disp_a")
    tiles = page.locator("#fleet-grid .tile")
    assert sorted(tiles.evaluate_all("ts => ts.map(t => t.dataset.device)")) == [
        "a-el-1",
        "a-el-2",
        "a-em-1",
    ]
    assert page.get_attribute("[data-device=a-el-1]", "data-condition") == "unknown"

    # ingest commits new state and NOTIFYs: the tile changes colour without a reload
    change_state(db_url, {"a-el-1": {"service_mode": 1, "floor": 3}})
    page.wait_for_selector("[data-device=a-el-1][data-condition=ok]")
    change_state(db_url, {"a-el-1": {"alarm_button": 1}, "b-el-1": {"alarm_button": 1}})
    page.wait_for_selector("[data-device=a-el-1][data-condition=alarm]")
    assert page.locator("[data-device=b-el-1]").count() == 0  # firm B's lift never shows
    shot(page, "fleet")

    ids = raise_alarms(db_url, fleet)
    page.click("#nav-alarms")
    row = page.locator(f"tr[data-alarm='{ids['a']}']")
    row.get_by_role("button", name="Acknowledge").click()
    page.wait_for_selector(f"tr[data-alarm='{ids['a']}'] .badge.acknowledged")
    assert page.locator(f"tr[data-alarm='{ids['b']}']").count() == 0
    shot(page, "alarms")


def test_asset_page_draws_telemetry_charts(page, db):
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 1, 5, 7, 10, tzinfo=UTC)
    db.execute("SELECT ensure_telemetry_partitions('2026-01-05', '2026-01-05')")
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO telemetry (device_id, metric, ts, value) VALUES ('a-em-1', %s, %s, %s)",
            [("power_total", start + timedelta(seconds=30 * i), 1000 + 10 * i) for i in range(80)],
        )
    log_in(page, "reg_j1")
    page.click("[data-device=a-em-1]")
    chart = page.locator(".chart[data-metric=power_total] svg path")
    chart.first.wait_for()
    assert chart.count() == 2  # the min..max band and the average line
    assert page.locator("#nav-audit").count() == 1  # regulators get the log view
    shot(page, "asset")
    page.click("#nav-reports")
    page.fill("#report-month", "2026-01")
    page.dispatch_event("#report-month", "change")
    page.wait_for_selector("#monthly-rows td:has-text('Firm A')")
    assert page.locator("#monthly-rows td:has-text('Firm B')").count() == 0  # not in J1
    shot(page, "reports")


def test_incident_appears_live_and_the_dispatcher_takes_it_to_closed(page, db_url, fleet, clock):
    from tests.api.test_api_incidents import engine_opens_and_dispatches, on_call

    on_call(db_url, fleet, clock)
    log_in(page, "disp_a")
    page.click("#nav-incidents")
    page.wait_for_selector("#incident-rows:has-text('no open incidents')")

    # the rescue engine detects an entrapment (rule R1) and dispatches (rule R4)
    incident = engine_opens_and_dispatches(db_url, clock)
    row = f"tr[data-incident='{incident}']"
    page.wait_for_selector(f"{row}[data-status=dispatched]")  # appeared without a reload
    countdown = page.inner_text(f"{row} .countdown")
    assert countdown == "30:00"  # rule R2: 30 minutes in a city, on the platform clock
    shot(page, "incident")

    page.click(f"{row} button[data-action=accept]")
    page.wait_for_selector(f"{row}[data-status=accepted]")
    page.click(f"{row} button[data-action=check-in]")
    # rule R6: nothing is pre-filled (this browser has no geolocation permission): the duty
    # line records the arrival the technician phoned in, as unproven
    page.wait_for_selector("#checkin-note:has-text('unproven')")
    assert page.input_value("#checkin-lat") == "" and page.input_value("#checkin-lon") == ""
    page.click("#checkin-submit")
    page.wait_for_selector(f"{row}[data-status=arrived]")
    page.click(f"{row} button[data-action=release]")
    page.wait_for_selector(f"{row}[data-status=released]")
    page.click(f"{row} button[data-action=close]")
    page.wait_for_selector("#incident-rows:has-text('no open incidents')")

    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        steps = conn.execute(
            "SELECT step, actor, technician_id, detail FROM rescue_steps "
            "WHERE incident_id = %s ORDER BY id",
            (incident,),
        ).fetchall()
    assert [s["step"] for s in steps] == [
        "reported",
        "dispatched",
        "accepted",
        "arrived",
        "released",
        "closed",
    ]
    assert steps[-1]["actor"] == "disp_a"
    # rule A1: the dispatcher is logged as acting on the technician's behalf
    technician = steps[2]["technician_id"]
    assert steps[2]["actor"] == f"disp_a on behalf of technician:{technician}"
    assert steps[3]["actor"] == f"disp_a on behalf of technician:{technician}"
    assert steps[3]["detail"]["proven"] is False
    assert steps[3]["detail"]["proof"] == "reported_without_position"


def test_work_orders_appear_live_count_down_and_show_their_timeline(page, db_url, fleet, clock):
    from workorders import flows as work
    from workorders.models import Kind, Level, Origin, Source

    log_in(page, "disp_a")
    page.click("#nav-work-orders")
    page.wait_for_selector("#work-order-rows:has-text('no work orders')")
    # the engine opens work from a fault: the queue shows it without a reload
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        opened = work.open_or_repeat(
            conn,
            source=Source(
                device_id="a-el-1",
                kind=Kind.FAULT_REPAIR,
                cause="fault_code:2",
                level=Level.MAJOR,
                origin=Origin.PHONE,
                source_ref=None,
                title="doors do not close",
                details={},
            ),
            at=clock.now(),
        )
    row = f"tr[data-work-order='{opened.work_order.id}']"
    page.wait_for_selector(f"{row}[data-status=opened]")
    # rule S1, level 2 in a city: respond in 10 minutes, on site in 1 hour, restored in 4
    countdowns = page.locator(f"{row} .countdown").all_inner_texts()
    assert countdowns == ["10:00", "1:00:00", "4:00:00"]
    page.select_option("#wo-level", "1")
    page.wait_for_selector("#work-order-rows:has-text('no work orders')")
    page.select_option("#wo-level", "2")
    page.wait_for_selector(row)
    page.once("dialog", lambda dialog: dialog.accept(str(fleet.ids["ta1"])))
    page.click(f"{row} button[data-action=assign]")
    page.wait_for_selector(f"{row}[data-status=assigned]")
    shot(page, "work-orders")
    page.click(f"{row} td.num a")
    page.wait_for_selector("#work-order-steps tr[data-step=assigned]")
    assert page.locator("#work-order-steps tr").count() == 2  # opened, assigned
    shot(page, "work-order")


# Counts each answer the console has read, one macrotask after its body was parsed: by then
# every continuation awaiting it (the view's reload and its drawing) has run.
COUNT_ANSWERS = """
window.__answered = [];
const plainFetch = window.fetch;
window.fetch = async (...args) => {
  const response = await plainFetch(...args);
  const json = response.json.bind(response);
  const url = new URL(String(args[0]), location.href);
  response.json = () => json().then(value => {
    setTimeout(() => window.__answered.push(url.pathname + url.search), 0);
    return value;
  });
  return response;
};
"""


def test_a_slow_earlier_answer_does_not_overwrite_the_history_asked_for_after_it(
    page, db_url, fleet, clock
):
    """The open list's answer comes back after the history's: the history stays drawn (it was
    replaced by the stale open list, empty, when the two answers crossed)."""
    from compliance.rescue import flows as rescue_flows
    from tests.api.test_api_incidents import engine_opens_and_dispatches, on_call

    on_call(db_url, fleet, clock)
    incident = engine_opens_and_dispatches(db_url, clock)
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        rescue_flows.close_false_alarm(
            conn, incident_id=incident, at=clock.now(), actor="disp_a", reason="test button"
        )
    page.add_init_script(COUNT_ANSWERS)
    page.reload()
    log_in(page, "disp_a")
    open_list = "() => window.__answered.filter(path => path === '/api/v1/incidents').length"
    page.wait_for_function(f"({open_list})() > 0")  # read at login, for the map's markers
    held = []

    def hold(route) -> None:
        held.append(route)

    page.route("**/api/v1/incidents", hold)  # the open list, not the history
    page.click("#nav-incidents")
    page.select_option("#incident-which", "all")
    closed_row = f"tr[data-incident='{incident}'][data-status=false_alarm]"
    page.wait_for_selector(closed_row)
    assert len(held) == 1, "the open list's request was not held"
    answered_before = page.evaluate(open_list)
    held[0].continue_()
    page.wait_for_function(f"({open_list})() > {answered_before}")
    assert page.locator(closed_row).count() == 1
