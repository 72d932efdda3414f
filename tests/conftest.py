"""Shared fixtures: real PostgreSQL and Mosquitto (see vigil/testing.py)."""

pytest_plugins = ["vigil.testing", "simulators.testing"]
