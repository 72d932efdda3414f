-- Commands the platform sends to devices through their gateway (lockout, release, dim), and
-- every result a gateway reported for them. Results are appended, never updated: a lockout may
-- report pending_safety first and done later.

CREATE TABLE commands (
    id          topic_id PRIMARY KEY,
    device_id   topic_id NOT NULL REFERENCES devices (id),
    action      text NOT NULL CHECK (action IN ('lockout', 'release', 'dim')),
    value       double precision,
    reason      text NOT NULL DEFAULT '',
    issued_by   text NOT NULL,
    issued_at   timestamptz NOT NULL,
    CHECK ((action = 'dim') = (value IS NOT NULL))
);
CREATE INDEX commands_device_idx ON commands (device_id, issued_at);

CREATE TABLE command_results (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command_id   topic_id NOT NULL REFERENCES commands (id),
    outcome      text NOT NULL CHECK (outcome IN ('done', 'pending_safety', 'refused', 'failed')),
    ts           timestamptz NOT NULL,
    detail       text NOT NULL DEFAULT '',
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (command_id, outcome, ts)
);
