"""Alarms in the caller's scope: list, acknowledge, clear (the lifecycle is the alerts domain's)."""
