-- Core schema: parties, assets, contracts, telemetry, state, events, dead letters, users.
-- Keys and CHECK constraints keep invalid states out; later issues add their own tables.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Identifiers that appear in MQTT topics (gateways, devices) share one shape.
CREATE DOMAIN topic_id AS text CHECK (VALUE ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$');
CREATE DOMAIN rescue_tier AS text CHECK (VALUE IN ('city', 'elsewhere'));

CREATE TABLE jurisdictions (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code                      topic_id NOT NULL UNIQUE,
    name                      text NOT NULL,
    default_tier              rescue_tier NOT NULL DEFAULT 'city',
    -- rule R2: on-site arrival deadline per tier, counted from report (or dispatch).
    rescue_minutes_city       integer NOT NULL DEFAULT 30 CHECK (rescue_minutes_city > 0),
    rescue_minutes_elsewhere  integer NOT NULL DEFAULT 60 CHECK (rescue_minutes_elsewhere > 0),
    rescue_clock_from         text NOT NULL DEFAULT 'report'
                              CHECK (rescue_clock_from IN ('report', 'dispatch')),
    -- rule M6: some jurisdictions forbid firms from adding barriers to a lift's operation.
    lockout_mode              text NOT NULL DEFAULT 'enforce'
                              CHECK (lockout_mode IN ('enforce', 'recommend')),
    created_at                timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_units (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                  text NOT NULL UNIQUE,
    safety_manager_name   text,
    safety_manager_phone  text,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_unit_id     bigint NOT NULL REFERENCES user_units (id),
    jurisdiction_id  bigint NOT NULL REFERENCES jurisdictions (id),
    name             text NOT NULL,
    address          text NOT NULL DEFAULT '',
    latitude         double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude        double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    tier             rescue_tier NOT NULL,
    timezone         text NOT NULL DEFAULT 'Asia/Shanghai',
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_unit_id, name)
);

CREATE TABLE maintenance_firms (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    licence_no          text NOT NULL UNIQUE,
    licence_expires_on  date NOT NULL,
    duty_phone          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE technicians (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    firm_id                 bigint NOT NULL REFERENCES maintenance_firms (id),
    name                    text NOT NULL,
    phone                   text,
    certificate_no          text NOT NULL UNIQUE,
    certificate_expires_on  date NOT NULL,
    home_latitude           double precision CHECK (home_latitude BETWEEN -90 AND 90),
    home_longitude          double precision CHECK (home_longitude BETWEEN -180 AND 180),
    active                  boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, firm_id),
    CHECK ((home_latitude IS NULL) = (home_longitude IS NULL))
);

CREATE TABLE manufacturers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateways (
    id          topic_id PRIMARY KEY,
    site_id     bigint REFERENCES sites (id),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id                 topic_id PRIMARY KEY,
    kind               text NOT NULL
                       CHECK (kind IN ('elevator', 'energy_meter', 'water_meter',
                                       'light_pole', 'high_mast')),
    model              text NOT NULL,
    site_id            bigint NOT NULL REFERENCES sites (id),
    -- the firm holding the contract in force (contracts keeps the periods and terms)
    firm_id            bigint REFERENCES maintenance_firms (id),
    manufacturer_id    bigint REFERENCES manufacturers (id),
    gateway_id         topic_id REFERENCES gateways (id),
    serial_no          text,
    registered_at      timestamptz NOT NULL DEFAULT now(),
    decommissioned_at  timestamptz,
    CHECK (decommissioned_at IS NULL OR decommissioned_at >= registered_at)
);
CREATE INDEX devices_site_idx ON devices (site_id);
CREATE INDEX devices_firm_idx ON devices (firm_id);
CREATE INDEX devices_gateway_idx ON devices (gateway_id);

-- One maintenance contract per device and period; periods of one device never overlap.
CREATE TABLE contracts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    firm_id       bigint NOT NULL REFERENCES maintenance_firms (id),
    user_unit_id  bigint NOT NULL REFERENCES user_units (id),
    device_id     topic_id NOT NULL REFERENCES devices (id),
    period        daterange NOT NULL CHECK (NOT isempty(period) AND lower(period) IS NOT NULL),
    -- service-level profile (rule S1) and other terms, validated by the domain that reads them
    terms         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(terms) = 'object'),
    signed_at     timestamptz NOT NULL DEFAULT now(),
    EXCLUDE USING gist (device_id WITH =, period WITH &&)
);

-- Telemetry: one row per (device, metric, device timestamp); the key deduplicates redelivery.
-- Plain PostgreSQL: daily range partitions with BRIN on time. TimescaleDB: a hypertable.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE TABLE telemetry (
            device_id  text NOT NULL,
            metric     text NOT NULL,
            ts         timestamptz NOT NULL,
            value      double precision NOT NULL,
            good       boolean NOT NULL DEFAULT true,
            PRIMARY KEY (device_id, metric, ts)
        );
        PERFORM create_hypertable('telemetry', 'ts', chunk_time_interval => interval '1 day');
    ELSE
        CREATE TABLE telemetry (
            device_id  text NOT NULL,
            metric     text NOT NULL,
            ts         timestamptz NOT NULL,
            value      double precision NOT NULL,
            good       boolean NOT NULL DEFAULT true,
            PRIMARY KEY (device_id, metric, ts)
        ) PARTITION BY RANGE (ts);
        CREATE INDEX telemetry_ts_brin ON telemetry USING brin (ts);
    END IF;
END
$$;

-- Create the daily partitions covering [first_day, last_day] that are missing (plain path only).
CREATE FUNCTION ensure_telemetry_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date;
    created integer := 0;
    part text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN 0;
    END IF;
    day := first_day;
    WHILE day <= last_day LOOP
        part := format('telemetry_p%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                part, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Latest value per metric of each device.
CREATE TABLE device_state (
    device_id   topic_id NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric      text NOT NULL,
    value       double precision NOT NULL,
    ts          timestamptz NOT NULL,
    good        boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, metric)
);

-- Transitions seen at the edge (rule R1 detection and M3 evidence read these).
CREATE TABLE events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    topic_id NOT NULL REFERENCES devices (id),
    metric       text NOT NULL,
    ts           timestamptz NOT NULL,
    value        double precision,
    previous     double precision,
    seq          bigint CHECK (seq >= 0),
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, metric, ts)
);
CREATE INDEX events_device_ts_idx ON events (device_id, ts);

-- Every message that failed validation, with its raw bytes and the reason.
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL DEFAULT '',
    gateway_id   text,
    device_id    text
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason);

CREATE TABLE roles (
    name         text PRIMARY KEY,
    description  text NOT NULL
);
INSERT INTO roles (name, description) VALUES
    ('admin', 'operates the platform'),
    ('regulator', 'special-equipment safety authority: reads its jurisdiction and the audit log'),
    ('firm_manager', 'manages a maintenance firm'),
    ('dispatcher', 'runs a maintenance firm''s duty line'),
    ('technician', 'qualified employee of a maintenance firm'),
    ('safety_manager', 'user unit''s safety manager: signs off maintenance records'),
    ('manufacturer', 'receives self-monitoring alarms of the lifts it built');

CREATE TABLE users (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username         text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9_.@-]{1,63}$'),
    display_name     text NOT NULL DEFAULT '',
    password_hash    text NOT NULL,
    role             text NOT NULL REFERENCES roles (name),
    firm_id          bigint REFERENCES maintenance_firms (id),
    technician_id    bigint,
    user_unit_id     bigint REFERENCES user_units (id),
    manufacturer_id  bigint REFERENCES manufacturers (id),
    jurisdiction_id  bigint REFERENCES jurisdictions (id),
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- a technician user belongs to the technician's own firm
    FOREIGN KEY (technician_id, firm_id) REFERENCES technicians (id, firm_id),
    -- rule A2: each role carries exactly the scope it is read through
    CHECK (CASE role
        WHEN 'admin' THEN num_nonnulls(firm_id, technician_id, user_unit_id,
                                       manufacturer_id, jurisdiction_id) = 0
        WHEN 'regulator' THEN jurisdiction_id IS NOT NULL
            AND num_nonnulls(firm_id, technician_id, user_unit_id, manufacturer_id) = 0
        WHEN 'firm_manager' THEN firm_id IS NOT NULL
            AND num_nonnulls(technician_id, user_unit_id, manufacturer_id, jurisdiction_id) = 0
        WHEN 'dispatcher' THEN firm_id IS NOT NULL
            AND num_nonnulls(technician_id, user_unit_id, manufacturer_id, jurisdiction_id) = 0
        WHEN 'technician' THEN firm_id IS NOT NULL AND technician_id IS NOT NULL
            AND num_nonnulls(user_unit_id, manufacturer_id, jurisdiction_id) = 0
        WHEN 'safety_manager' THEN user_unit_id IS NOT NULL
            AND num_nonnulls(firm_id, technician_id, manufacturer_id, jurisdiction_id) = 0
        WHEN 'manufacturer' THEN manufacturer_id IS NOT NULL
            AND num_nonnulls(firm_id, technician_id, user_unit_id, jurisdiction_id) = 0
        ELSE false END)
);

-- Which devices a technician is assigned to (rule A2: technicians see only these).
CREATE TABLE technician_assignments (
    technician_id  bigint NOT NULL REFERENCES technicians (id),
    device_id      topic_id NOT NULL REFERENCES devices (id),
    assigned_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (technician_id, device_id)
);

-- API keys for integrations: only a hash of the secret is kept.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id),
    name         text NOT NULL,
    prefix       text NOT NULL UNIQUE CHECK (length(prefix) >= 8),
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    CHECK (expires_at IS NULL OR expires_at > created_at)
);
