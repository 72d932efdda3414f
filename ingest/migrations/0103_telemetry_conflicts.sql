-- A (device, metric, ts) that arrives again with another value: the first value stays stored and
-- the disagreement is recorded here, never dropped silently (docs/ingest.md).
CREATE TABLE telemetry_conflicts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id      text NOT NULL,
    metric         text NOT NULL,
    ts             timestamptz NOT NULL,
    kept_value     double precision NOT NULL,
    offered_value  double precision NOT NULL,
    offered_good   boolean NOT NULL,
    received_at    timestamptz NOT NULL,
    UNIQUE (device_id, metric, ts, offered_value)
);
CREATE INDEX telemetry_conflicts_received_idx ON telemetry_conflicts (received_at);
