"""Entrapment rescue incidents through the API (the lifecycle is compliance.rescue's)."""
