"""The API serves every domain it has; a router whose import fails stops the start loudly."""

from __future__ import annotations

import sys

import pytest

from runtime import api as api_app


def test_every_optional_router_is_served():
    assert set(api_app._optional_routers()) == set(api_app.OPTIONAL_ROUTERS)


def test_a_dependency_missing_inside_a_router_fails_the_start(monkeypatch):
    # a third-party module a router imports is gone: that must not silently drop the router
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx -> ModuleNotFoundError
    monkeypatch.setitem(api_app.OPTIONAL_ROUTERS, "probe", "tests.api.router_needing_httpx")
    with pytest.raises(ModuleNotFoundError, match="httpx"):
        api_app._optional_routers()


def test_an_absent_domain_package_is_served_without(monkeypatch):
    monkeypatch.setitem(api_app.OPTIONAL_ROUTERS, "absent", "api.no_such_domain.views")
    assert "absent" not in api_app._optional_routers()
