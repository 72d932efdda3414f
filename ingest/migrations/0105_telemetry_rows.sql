-- Telemetry costs bytes, not a row, per point (docs/ingest.md, "Storage layout").
--
-- One row per (device, device timestamp) holds every metric the device reported at that instant:
-- the device is a 4-byte number, the metric names are one interned set (`telemetry_metric_sets`)
-- and the values a float8 array in the set's order. A point costs ~15 B instead of ~168 B, and a
-- batch writes a tenth of the rows. The key (device_ref, ts) deduplicates redelivery; a point that
-- arrives later for an existing (device, ts) is merged into its row (merge_telemetry_stage).
-- `telemetry` stays readable as a view with the old columns (device_id, metric, ts, value, good).
-- The same layout serves plain PostgreSQL (daily partitions) and TimescaleDB (a hypertable), and
-- both keep the hourly roll-ups in a table refreshed from an invalidation log, so late data of any
-- accepted age is rolled up again (a continuous aggregate only re-rolls its refresh window).

-- A compact number per device for the telemetry rows.
ALTER TABLE devices ADD COLUMN ref integer GENERATED ALWAYS AS IDENTITY;
ALTER TABLE devices ADD CONSTRAINT devices_ref_key UNIQUE (ref);

-- Each distinct, sorted list of metric names a row holds (a handful per device model).
CREATE TABLE telemetry_metric_sets (
    id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    metrics  text[] NOT NULL UNIQUE CHECK (cardinality(metrics) > 0)
);

DO $$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
BEGIN
    IF timescale THEN
        DROP MATERIALIZED VIEW IF EXISTS telemetry_hourly;  -- a continuous aggregate (0101)
    END IF;
    ALTER TABLE telemetry RENAME TO telemetry_by_point;

    -- values[i] is metric metrics[i] of the set; bad lists the positions not good
    EXECUTE format($table$
        CREATE TABLE telemetry_rows (
            device_ref  integer NOT NULL,
            set_id      integer NOT NULL,
            ts          timestamptz NOT NULL,
            "values"    double precision[] NOT NULL,
            bad         smallint[],
            PRIMARY KEY (device_ref, ts)
        ) %s $table$, CASE WHEN timescale THEN '' ELSE 'PARTITION BY RANGE (ts)' END);
    IF timescale THEN
        -- No default (ts DESC) index: the key serves every read, and the index slowed COPY.
        PERFORM create_hypertable('telemetry_rows', 'ts',
            chunk_time_interval => interval '1 day', create_default_indexes => false);
        ALTER TABLE telemetry_rows SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'device_ref',
            timescaledb.compress_orderby = 'ts');
        PERFORM add_compression_policy('telemetry_rows', interval '7 days');
        PERFORM add_retention_policy('telemetry_rows', interval '365 days');
    ELSE
        CREATE INDEX telemetry_rows_ts_brin ON telemetry_rows USING brin (ts);
    END IF;

    -- Hourly roll-ups: one table on both paths (0101 made a continuous aggregate on TimescaleDB).
    IF timescale THEN
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
        CREATE TABLE telemetry_hourly_pending (
            bucket     timestamptz PRIMARY KEY,
            marked_at  timestamptz NOT NULL
        );
    END IF;
END
$$;

-- Every point as a row, with the columns telemetry always had.
CREATE VIEW telemetry AS
SELECT d.id AS device_id,
       p.metric,
       r.ts,
       p.value,
       NOT (p.position = ANY (coalesce(r.bad, '{}'::smallint[]))) AS good
FROM telemetry_rows r
JOIN devices d ON d.ref = r.device_ref
JOIN telemetry_metric_sets s ON s.id = r.set_id
CROSS JOIN LATERAL unnest(s.metrics, r."values") WITH ORDINALITY AS p(metric, value, position);

-- One metric of one device in [from_ts, to_ts), oldest first: reads one array element per row
-- through the (device_ref, ts) key instead of unnesting every row.
CREATE FUNCTION telemetry_series(device text, metric_name text, from_ts timestamptz,
                                 to_ts timestamptz)
RETURNS TABLE (ts timestamptz, value double precision, good boolean)
LANGUAGE sql STABLE AS $$
    SELECT r.ts, r."values"[p.position], NOT (p.position = ANY (coalesce(r.bad, '{}'::smallint[])))
    FROM devices d
    JOIN telemetry_rows r ON r.device_ref = d.ref
    JOIN telemetry_metric_sets s ON s.id = r.set_id
    CROSS JOIN LATERAL (SELECT array_position(s.metrics, metric_name)::smallint AS position) p
    WHERE d.id = device AND r.ts >= from_ts AND r.ts < to_ts AND p.position IS NOT NULL
    ORDER BY r.ts
$$;

-- Daily partitions of telemetry_rows (plain path); same names as before with the new parent.
CREATE OR REPLACE FUNCTION ensure_telemetry_partitions(first_day date, last_day date)
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
        part := format('telemetry_rows_p%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF telemetry_rows '
                'FOR VALUES FROM (%L) TO (%L)',
                part, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END
$$;

CREATE OR REPLACE FUNCTION drop_telemetry_partitions(before date)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;  -- retention drops chunks (ingest.scheduled runs it when the job scheduler fails)
    END IF;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry_rows'::regclass
          AND c.relname ~ '^telemetry_rows_p[0-9]{8}$'
          AND to_date(substr(c.relname, 17), 'YYYYMMDD') + 1 <= before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
END
$$;

-- Roll up (again) up to max_buckets pending hours, on both paths; returns the hours refreshed.
-- Rows an uncommitted ingest transaction still holds are skipped and taken next time.
CREATE OR REPLACE FUNCTION refresh_telemetry_hourly(max_buckets integer DEFAULT 24)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    taken timestamptz[];
BEGIN
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

-- Add one point to the row of (device_ref, ts), creating the row; false (and no change) when the
-- row holds that metric already. The set stays sorted by metric name. For the rare paths: late
-- data for a stored instant, a batch's repeated points, and inserts through the view.
CREATE FUNCTION telemetry_append(ref integer, at timestamptz, metric_name text,
                                 new_value double precision, new_good boolean)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    current_metrics text[] := '{}';
    current_values double precision[] := '{}';
    current_bad smallint[] := '{}';
    all_metrics text[];
    all_values double precision[];
    all_bad smallint[];
    merged_set integer;
    exists_ boolean;
BEGIN
    SELECT s.metrics, r."values", coalesce(r.bad, '{}'::smallint[])
    INTO current_metrics, current_values, current_bad
    FROM telemetry_rows r JOIN telemetry_metric_sets s ON s.id = r.set_id
    WHERE r.device_ref = ref AND r.ts = at
    FOR UPDATE OF r;
    exists_ := FOUND;
    IF exists_ AND metric_name = ANY (current_metrics) THEN
        RETURN false;
    END IF;
    WITH points AS (
        SELECT u.m, u.v, NOT (u.i::smallint = ANY (coalesce(current_bad, '{}'))) AS g
        FROM unnest(coalesce(current_metrics, '{}'), coalesce(current_values, '{}'))
             WITH ORDINALITY AS u(m, v, i)
        UNION ALL
        SELECT metric_name, new_value, new_good
    ), ordered AS (
        SELECT m, v, g, row_number() OVER (ORDER BY m)::smallint AS i FROM points
    )
    SELECT array_agg(m ORDER BY i), array_agg(v ORDER BY i), array_agg(i ORDER BY i) FILTER (WHERE NOT g)
    INTO all_metrics, all_values, all_bad
    FROM ordered;
    INSERT INTO telemetry_metric_sets (metrics) VALUES (all_metrics) ON CONFLICT (metrics) DO NOTHING;
    SELECT id INTO merged_set FROM telemetry_metric_sets WHERE metrics = all_metrics;
    IF exists_ THEN
        UPDATE telemetry_rows SET set_id = merged_set, "values" = all_values, bad = all_bad
        WHERE device_ref = ref AND ts = at;
    ELSE
        INSERT INTO telemetry_rows (device_ref, set_id, ts, "values", bad)
        VALUES (ref, merged_set, at, all_values, all_bad);
    END IF;
    RETURN true;
END
$$;

-- Move the staged rows of a batch (pg_temp.ingest_telemetry_stage, same columns as
-- telemetry_rows, at most one row per (device, ts)) into telemetry_rows, deduplicating per
-- point: a new (device, ts) is inserted, a new metric of a stored (device, ts) is appended to its
-- row, an equal point is a redelivery, and a different value keeps the stored one and is recorded
-- in telemetry_conflicts. Returns the number of points stored.
CREATE FUNCTION merge_telemetry_stage(received_at timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    stored bigint;
    point record;
BEGIN
    WITH inserted AS (
        INSERT INTO telemetry_rows (device_ref, set_id, ts, "values", bad)
        SELECT device_ref, set_id, ts, "values", bad FROM pg_temp.ingest_telemetry_stage
        ON CONFLICT (device_ref, ts) DO NOTHING
        RETURNING cardinality("values") AS points
    )
    SELECT coalesce(sum(points), 0) INTO stored FROM inserted;

    -- Each staged point beside the stored row of its (device, ts); the rows just inserted compare
    -- equal and drop out.
    CREATE TEMP TABLE IF NOT EXISTS ingest_telemetry_offered (
        device_ref integer, ts timestamptz, metric text, value double precision,
        good boolean, offer_position bigint, kept_value double precision, kept_position integer
    ) ON COMMIT DELETE ROWS;
    TRUNCATE pg_temp.ingest_telemetry_offered;
    INSERT INTO pg_temp.ingest_telemetry_offered
    SELECT st.device_ref, st.ts, o.metric, o.value,
           NOT (o.position::smallint = ANY (coalesce(st.bad, '{}'::smallint[]))), o.position,
           r."values"[array_position(rs.metrics, o.metric)], array_position(rs.metrics, o.metric)
    FROM pg_temp.ingest_telemetry_stage st
    JOIN telemetry_metric_sets ss ON ss.id = st.set_id
    CROSS JOIN LATERAL unnest(ss.metrics, st."values") WITH ORDINALITY AS o(metric, value, position)
    JOIN telemetry_rows r ON r.device_ref = st.device_ref AND r.ts = st.ts
    JOIN telemetry_metric_sets rs ON rs.id = r.set_id;

    INSERT INTO telemetry_conflicts
        (device_id, metric, ts, kept_value, offered_value, offered_good, received_at)
    SELECT d.id, o.metric, o.ts, o.kept_value, o.value, o.good, received_at
    FROM pg_temp.ingest_telemetry_offered o
    JOIN devices d ON d.ref = o.device_ref
    WHERE o.kept_position IS NOT NULL AND o.kept_value IS DISTINCT FROM o.value
    ON CONFLICT DO NOTHING;

    -- Metrics new to a stored row (rare: partial late data, a message split in two).
    FOR point IN
        SELECT * FROM pg_temp.ingest_telemetry_offered
        WHERE kept_position IS NULL ORDER BY device_ref, ts, offer_position
    LOOP
        IF telemetry_append(point.device_ref, point.ts, point.metric, point.value, point.good) THEN
            stored := stored + 1;
        END IF;
    END LOOP;
    RETURN stored;
END
$$;

-- Inserts through the view, one point at a time (tests, hand corrections); the key refuses a
-- point that is stored already, as the table of one row per point did.
CREATE FUNCTION telemetry_insert_point() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ref_ integer;
BEGIN
    SELECT ref INTO ref_ FROM devices WHERE id = NEW.device_id;
    IF ref_ IS NULL THEN
        RAISE foreign_key_violation USING MESSAGE = format('no device %L', NEW.device_id);
    END IF;
    IF NOT telemetry_append(ref_, NEW.ts, NEW.metric, NEW.value, coalesce(NEW.good, true)) THEN
        RAISE unique_violation USING MESSAGE = format(
            'telemetry %s %s at %s is stored already', NEW.device_id, NEW.metric, NEW.ts);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER telemetry_insert INSTEAD OF INSERT ON telemetry
FOR EACH ROW EXECUTE FUNCTION telemetry_insert_point();
ALTER VIEW telemetry ALTER COLUMN good SET DEFAULT true;

-- Carry over what the point-per-row table holds, then drop it.
INSERT INTO telemetry_metric_sets (metrics)
SELECT DISTINCT metrics FROM (
    SELECT array_agg(metric ORDER BY metric) AS metrics
    FROM telemetry_by_point GROUP BY device_id, ts
) AS grouped
ON CONFLICT (metrics) DO NOTHING;

DO $$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM telemetry_by_point LOOP
        PERFORM ensure_telemetry_partitions(day, day);
    END LOOP;
END
$$;

INSERT INTO telemetry_rows (device_ref, set_id, ts, "values", bad)
SELECT d.ref, s.id, g.ts, g.vals, nullif(g.bad, '{}')
FROM (
    SELECT device_id, ts,
           array_agg(metric ORDER BY metric) AS metrics,
           array_agg(value ORDER BY metric) AS vals,
           coalesce(array_agg(position) FILTER (WHERE NOT good), '{}') AS bad
    FROM (SELECT t.*, row_number() OVER (PARTITION BY device_id, ts ORDER BY metric)::smallint
                 AS position
          FROM telemetry_by_point t) AS numbered
    GROUP BY device_id, ts
) AS g
JOIN devices d ON d.id = g.device_id
JOIN telemetry_metric_sets s ON s.metrics = g.metrics;

INSERT INTO telemetry_hourly_pending (bucket, marked_at)
SELECT DISTINCT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', now()
FROM telemetry_by_point WHERE is_rollup_metric(metric)
ON CONFLICT (bucket) DO NOTHING;

DROP TABLE telemetry_by_point CASCADE;
