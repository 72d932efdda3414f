"""The Grafana dashboard and docs/operations.md name only metrics Vigil exports, and every
exported metric is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.registry import REGISTRY

import vigil.metrics  # noqa: F401 (registers the process metrics)
from runtime import engine

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _metric_names() -> set[str]:
    """Every vigil_ metric a scrape shows: the processes', and the engine's database figures."""
    names = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in REGISTRY.collect()
        if family.name.startswith("vigil_")
    }
    return names | engine.database_figures(lambda: None).names()


def test_the_dashboard_uses_only_exported_metrics():
    exported = _metric_names()
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bvigil_[a-z_]+", target["expr"])
    }
    assert used, "the dashboard draws nothing"
    unknown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used} - exported
    assert not unknown, unknown


def test_every_exported_metric_is_documented():
    documented = set(re.findall(r"`(vigil_[a-z_]+)`", (DOCS / "operations.md").read_text()))
    assert _metric_names() <= documented, _metric_names() - documented
