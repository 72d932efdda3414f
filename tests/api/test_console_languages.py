"""The console as its users see it, in Chinese and in English (issue 17), in a real headless
Chromium driven by Playwright: a dispatcher follows an entrapment from the map to closure, a
failed lamp is not "ok", times are in the site's zone, the API docs work offline, and no page
logs an error. Screenshots of each main view, in both languages, go to the folder printed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.api.conftest import PASSWORD
from tests.api.test_api_browser import ARGS, CHROMIUM, browser  # noqa: F401 (fixture)
from tests.api.test_api_live import change_state

LANGUAGES = {
    "zh-CN": {"incidents": "困人救援", "accept": "接单", "closed": "已关闭", "alarm": "报警"},
    "en": {"incidents": "Incidents", "accept": "Accept", "closed": "closed", "alarm": "alarm"},
}
SHANGHAI = "GMT+8"  # how Chromium's Intl names Asia/Shanghai in both languages


@pytest.fixture(scope="module")
def shots_dir() -> Path:
    folder = Path(os.environ.get("VIGIL_SCREENSHOTS") or tempfile.mkdtemp(prefix="vigil-console-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def console(browser, running_api, shots_dir, request, capsys):  # noqa: F811
    """A page in the language of the test's parameter; fails the test on any console error."""
    lang = request.param
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=lang)
    page = context.new_page()
    # generous: on a busy 2-core machine Swagger UI alone takes over 10 s to render the API
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{running_api.url}/")
    page.lang = lang  # type: ignore[attr-defined]
    page.shots = shots_dir  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()
        with capsys.disabled():
            print(f"\nconsole screenshots ({lang}): {shots_dir}")
    assert errors == [], errors


def shot(page, name: str) -> None:
    page.screenshot(path=str(page.shots / f"{name}-{page.lang}.png"), full_page=True)


def log_in(page, username: str) -> None:
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#live.on")


@pytest.mark.parametrize("console", list(LANGUAGES), indirect=True)
def test_a_dispatcher_follows_an_entrapment_from_the_map_to_closure(console, db_url, fleet, clock):
    from tests.api.test_api_incidents import engine_opens_and_dispatches, on_call

    page, words = console, LANGUAGES[console.lang]
    on_call(db_url, fleet, clock)
    log_in(page, "disp_a")
    assert page.inner_text("#nav-incidents") == words["incidents"]
    # the header clock says which zone it shows: the sites'
    assert page.get_attribute("#clock", "data-zone") == "Asia/Shanghai"
    shot(page, "fleet")
    page.click("#nav-map")
    page.wait_for_selector("#dispatch-map g.site")
    page.wait_for_selector("#dispatch-map g.technician")  # on call, at its home base
    incident = engine_opens_and_dispatches(db_url, clock)
    # the marker appears live on the map; the dispatcher follows it to the incident
    marker = f"#dispatch-map a.incident-marker[data-incident='{incident}']"
    page.wait_for_selector(marker)
    shot(page, "map")
    page.click(f"#map-incidents a[data-incident='{incident}']")
    page.wait_for_selector("#incident-status[data-status=dispatched]")
    detail = page.inner_text("#incident-detail")
    assert SHANGHAI in detail  # reported, deadline: in the site's zone, named
    assert "Asia/Shanghai" in detail
    shot(page, "incident")
    page.click(f"#incident-detail button:has-text('{words['accept']}')")
    page.wait_for_selector("#incident-status[data-status=accepted]")
    page.click("#incident-detail button[data-action=check-in]")
    # rule R6: no position is pre-filled; without one the arrival is unproven
    assert page.input_value("#checkin-lat") == "" and page.input_value("#checkin-lon") == ""
    page.click("#checkin-submit")
    page.wait_for_selector("#incident-status[data-status=arrived]")
    page.click("#incident-detail button[data-action=release]")
    page.wait_for_selector("#incident-status[data-status=released]")
    page.click("#incident-detail button[data-action=close]")
    page.wait_for_selector("#incident-status[data-status=closed]")
    assert words["closed"] in page.inner_text("#incident-status")
    steps = page.locator("#incident-steps tr").evaluate_all("rs => rs.map(r => r.dataset.step)")
    assert steps == ["reported", "dispatched", "accepted", "arrived", "released", "closed"]
    assert all(
        SHANGHAI in text
        for text in page.locator("#incident-steps tr td:first-child").all_inner_texts()
    )
    shot(page, "incident-closed")
    # the history finds it by its asset
    page.click("#nav-incidents")
    page.select_option("#incident-which", "all")
    page.fill("#incident-search", "a-el-1")
    page.wait_for_selector(f"tr[data-incident='{incident}'][data-status=closed]")
    shot(page, "incident-history")


@pytest.mark.parametrize("console", list(LANGUAGES), indirect=True)
def test_a_failed_lamp_is_not_ok_and_the_log_reads_as_fields(console, db_url, fleet, clock):
    from alerts import service as alerts
    from compliance.log import service as compliance_log
    from fleet.factory import FleetFactory

    page, words = console, LANGUAGES[console.lang]
    with psycopg.connect(db_url, autocommit=True) as conn:
        FleetFactory(conn, at=clock.now()).device(
            "a-lp-1", kind="light_pole", model="model-x", site=fleet.ids["s1"],
            firm=fleet.ids["firm_a"],
        )  # fmt: skip
    # the controller says all is well (relay closed, no lamp out) ...
    change_state(db_url, {"a-lp-1": {"lamp_on": 1, "lamp_power": 0}})
    # ... but the lamp draws no power when it should be lit: rule L1 raised an alarm
    with psycopg.connect(db_url, autocommit=True) as conn:
        alerts.raise_alarm(
            conn, source_type="device", source_id="a-lp-1", type="lamp_failure",
            severity="major", message="a-lp-1: lamp should be lit but draws no power",
            audience=["firm"], at=clock.now(),
        )  # fmt: skip
        # and the compliance log recorded it (rule A1), as the conditions runner does
        compliance_log.append(
            conn, kind="alarm.raised", subject_type="device", subject_id="a-lp-1",
            body={"type": "lamp_failure", "severity": "major", "rule": "L1",
                  "thresholds": {"lamp_rated_w": 150}, "at": clock.now().isoformat()},
            actor="compliance-engine", at=clock.now(),
        )  # fmt: skip
    log_in(page, "admin")
    tile = page.locator("[data-device=a-lp-1]")
    assert tile.get_attribute("data-status") == "alarm"  # not green "ok"
    assert words["alarm"] in tile.inner_text()
    legend = page.inner_text("#status-legend")
    assert words["alarm"] in legend
    shot(page, "fleet-lamp")
    page.click("[data-device=a-lp-1]")
    page.wait_for_selector("#asset-state tr[data-metric=lamp_on]")
    lamp = page.inner_text("#asset-state tr[data-metric=lamp_on] td.num")
    assert lamp == ("亮" if page.lang == "zh-CN" else "on")  # a word, not the code 1
    shot(page, "asset")
    page.click("#nav-alarms")
    page.wait_for_selector("#alarm-rows tr[data-alarm]")
    shot(page, "alarms")
    page.click("#nav-audit")
    page.wait_for_selector("#audit-rows dl.fields dt")
    assert page.locator("#audit-rows pre").count() == 0  # fields, not JSON
    fields = page.inner_text("#audit-rows tr:first-child dl.fields")
    assert "150" in fields and "{" not in fields
    assert ("灯具故障" if page.lang == "zh-CN" else "lamp failure") in fields
    shot(page, "audit")
    page.click("#nav-work-orders")
    page.wait_for_selector("#work-order-rows tr")
    shot(page, "work-orders")


@pytest.mark.parametrize("console", ["en"], indirect=True)
def test_api_docs_render_with_the_network_blocked(console, running_api):
    page = console
    local = running_api.url
    blocked: list[str] = []

    def only_vigil(route) -> None:
        if route.request.url.startswith(local):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_vigil)
    page.goto(f"{local}/docs")
    page.wait_for_selector(".swagger-ui .info .title:has-text('Vigil API')")
    page.wait_for_selector(".opblock-tag-section")  # the operations, from /openapi.json
    assert blocked == []  # nothing was even asked of another host
    assert page.evaluate("fetch('/favicon.svg').then(r => r.status)") == 200
    shot(page, "docs")
