-- Ingest: latest status and health per gateway, hourly rollups of meter and light metrics, and
-- the storage policies of each path (plain PostgreSQL or TimescaleDB). The same queries read
-- both paths: `telemetry` and `telemetry_hourly` have the same columns on each.

-- Latest retained status and latest health figures reported by each gateway.
CREATE TABLE gateway_status (
    gateway_id           topic_id PRIMARY KEY REFERENCES gateways (id) ON DELETE CASCADE,
    state                text CHECK (state IN ('online', 'offline')),
    state_ts             timestamptz,
    polls_per_s          double precision,
    errors               bigint CHECK (errors >= 0),
    buffer_depth         bigint CHECK (buffer_depth >= 0),
    dropped              bigint CHECK (dropped >= 0),
    devices_unavailable  bigint CHECK (devices_unavailable >= 0),
    health_ts            timestamptz,
    updated_at           timestamptz NOT NULL,
    CHECK ((state IS NULL) = (state_ts IS NULL))
);

-- Metrics of energy meters, water meters, light poles and high masts (vigil.catalog), the ones
-- rolled up hourly; a test keeps this list equal to the catalogue.
CREATE FUNCTION is_rollup_metric(metric text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT metric = ANY (ARRAY[
        'battery', 'burning_hours', 'current_l1', 'current_l2', 'current_l3', 'dim_level',
        'export_energy', 'flow_rate', 'forward_volume', 'frequency', 'import_energy',
        'lamp_current', 'lamp_on', 'lamp_power', 'lamps_out', 'lamps_total', 'lux',
        'power_factor', 'power_l1', 'power_l2', 'power_l3', 'power_total', 'reverse_volume',
        'supply_voltage', 'switch_on_count', 'total_energy', 'valve_open', 'voltage_l1',
        'voltage_l2', 'voltage_l3'])
        OR metric ~ '^lamp_[0-9]+_(on|power)$'
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        -- A continuous aggregate over good samples; WITH NO DATA because migrations run in a
        -- transaction. Policies use defaults here; ingest re-applies the configured intervals.
        EXECUTE $view$
            CREATE MATERIALIZED VIEW telemetry_hourly WITH (timescaledb.continuous) AS
            SELECT device_id,
                   metric,
                   time_bucket(interval '1 hour', ts) AS bucket,
                   count(*) AS samples,
                   min(value) AS min_value,
                   max(value) AS max_value,
                   avg(value) AS avg_value,
                   first(value, ts) AS first_value,
                   last(value, ts) AS last_value
            FROM telemetry
            WHERE good AND is_rollup_metric(metric)
            GROUP BY device_id, metric, time_bucket(interval '1 hour', ts)
            WITH NO DATA
        $view$;
        PERFORM add_continuous_aggregate_policy('telemetry_hourly',
            start_offset => interval '3 days', end_offset => interval '1 hour',
            schedule_interval => interval '15 minutes');
        ALTER TABLE telemetry SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'device_id, metric',
            timescaledb.compress_orderby = 'ts');
        PERFORM add_compression_policy('telemetry', interval '7 days');
        PERFORM add_retention_policy('telemetry', interval '365 days');
    ELSE
        CREATE TABLE telemetry_hourly (
            device_id    text NOT NULL,
            metric       text NOT NULL,
            bucket       timestamptz NOT NULL,
            samples      bigint NOT NULL CHECK (samples > 0),
            min_value    double precision NOT NULL,
            max_value    double precision NOT NULL,
            avg_value    double precision NOT NULL,
            first_value  double precision NOT NULL,
            last_value   double precision NOT NULL,
            PRIMARY KEY (device_id, metric, bucket)
        );
        CREATE INDEX telemetry_hourly_bucket_brin ON telemetry_hourly USING brin (bucket);
        -- Hours that received telemetry since they were last rolled up (an invalidation log,
        -- like a continuous aggregate's): late and redelivered data are rolled up again.
        CREATE TABLE telemetry_hourly_pending (
            bucket     timestamptz PRIMARY KEY,
            marked_at  timestamptz NOT NULL
        );
    END IF;
END
$$;

-- Roll up (again) up to max_buckets pending hours; returns how many hours were refreshed.
-- Rows an uncommitted ingest transaction still holds are skipped and taken next time.
CREATE FUNCTION refresh_telemetry_hourly(max_buckets integer DEFAULT 24)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    taken timestamptz[];
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN 0;  -- the continuous aggregate policy refreshes it
    END IF;
    WITH picked AS (
        SELECT bucket FROM telemetry_hourly_pending
        ORDER BY bucket LIMIT max_buckets FOR UPDATE SKIP LOCKED
    ), removed AS (
        DELETE FROM telemetry_hourly_pending p USING picked
        WHERE p.bucket = picked.bucket RETURNING p.bucket
    )
    SELECT array_agg(bucket) INTO taken FROM removed;
    IF taken IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM telemetry_hourly WHERE bucket = ANY (taken);
    INSERT INTO telemetry_hourly
        (device_id, metric, bucket, samples, min_value, max_value, avg_value,
         first_value, last_value)
    SELECT t.device_id, t.metric, b.bucket, count(*), min(t.value), max(t.value), avg(t.value),
           (array_agg(t.value ORDER BY t.ts))[1], (array_agg(t.value ORDER BY t.ts DESC))[1]
    FROM unnest(taken) AS b(bucket)
    JOIN telemetry t ON t.ts >= b.bucket AND t.ts < b.bucket + interval '1 hour'
    WHERE t.good AND is_rollup_metric(t.metric)
    GROUP BY t.device_id, t.metric, b.bucket;
    RETURN cardinality(taken);
END
$$;

-- Drop the daily partitions that end on or before `before` (plain path); returns their names.
CREATE FUNCTION drop_telemetry_partitions(before date)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;  -- the retention policy drops chunks
    END IF;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry'::regclass
          AND c.relname ~ '^telemetry_p[0-9]{8}$'
          AND to_date(substr(c.relname, 12), 'YYYYMMDD') + 1 <= before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
END
$$;
