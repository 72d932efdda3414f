"""Assets, their live state, events and telemetry."""
