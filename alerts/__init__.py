"""Alerts: alarm lifecycle, escalation policies, on-call rosters, notification channels."""
