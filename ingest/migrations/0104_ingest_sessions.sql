-- The broker sessions of ingest workers (MQTT client ids), so that scaling down from M to N
-- workers finds the sessions of workers N..M-1, drains what they hold and ends them.
CREATE TABLE ingest_sessions (
    client_id   text PRIMARY KEY,
    started_at  timestamptz NOT NULL
);
