"""Maintenance through the API: records, verdicts, sign-off, due lists, lockout overrides."""
