"""Ingest: MQTT consumer, validation, dead letters, batching, COPY writer, device state."""
