"""Vigil shared kernel: config, clock, wire format, device catalogue, database."""

__version__ = "0.1.0"
