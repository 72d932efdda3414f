"""The API's /metrics: Prometheus text that counts requests by route template and status."""

from __future__ import annotations

from tests.api.conftest import login
from tests.metrics import sample, samples


def test_metrics_count_requests_by_route_template_and_status(client):
    headers = login(client, "disp_a")
    before = client.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    route = "/api/v1/assets/{device_id}"
    found = sample(before.text, "vigil_http_requests_total", route=route, status="200")
    missing = sample(before.text, "vigil_http_requests_total", route=route, status="404")
    assert client.get("/api/v1/assets/a-el-1", headers=headers).status_code == 200
    assert client.get("/api/v1/assets/a-el-2", headers=headers).status_code == 200
    assert client.get("/api/v1/assets/nowhere", headers=headers).status_code == 404
    after = client.get("/metrics").text
    # one series per route template, not per asset id
    assert sample(after, "vigil_http_requests_total", route=route, status="200") == found + 2
    assert sample(after, "vigil_http_requests_total", route=route, status="404") == missing + 1
    assert not any("a-el-1" in str(labels) for _, labels, _ in samples(after))
    assert sample(after, "vigil_http_request_duration_seconds_count", route=route) >= 3
