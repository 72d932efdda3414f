"""Rescue of trapped passengers: entrapment detection, dispatch, deadlines (rules R1-R8)."""
