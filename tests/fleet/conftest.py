"""Fixtures of the fleet tests: the registry's factory and the example import set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fleet.factory import FleetFactory
from tests.ingest.conftest import publisher_factory  # noqa: F401 - a fixture of these tests

EXAMPLE = Path(__file__).resolve().parents[2] / "fleet" / "examples" / "fleet"


@pytest.fixture
def factory(db, clock) -> FleetFactory:
    """The registry's factory on the test's database, at the fake clock's now."""
    return FleetFactory(db, at=clock.now())


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example set of docs/fleet.md, for a test to change."""
    folder = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, folder)
    return folder


from tests.api.conftest import client, fleet  # noqa: E402, F401 - the API's fixtures
