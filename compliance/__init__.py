"""Compliance engine: maintenance schedules and evidence, escalation, rescue, compliance log."""
