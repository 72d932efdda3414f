"""Maintenance compliance (rules M1-M11): records, evidence, due clocks, escalation, lockout."""
