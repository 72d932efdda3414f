-- Least privilege: the application role has no DDL rights, so the storage upkeep it triggers
-- (daily partitions, retention, compression, policies, hourly roll-ups) runs through functions
-- that execute with the rights of the role that owns the schema (the migration role), each
-- doing exactly one thing, with a fixed search_path.
ALTER FUNCTION ensure_telemetry_partitions(date, date)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION drop_telemetry_partitions(date)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION refresh_telemetry_hourly(integer)
    SECURITY DEFINER SET search_path = public, pg_temp;

-- TimescaleDB: drop the telemetry chunks ending on or before a day.
CREATE FUNCTION storage_drop_chunks_before(day date) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT c::text FROM drop_chunks('telemetry_rows', older_than => day::timestamptz) c;
END
$$;

-- TimescaleDB: compress the telemetry chunks ending on or before a day; how many.
CREATE FUNCTION storage_compress_chunks_before(day date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    done integer := 0;
    chunk regclass;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN 0;
    END IF;
    FOR chunk IN SELECT show_chunks('telemetry_rows', older_than => day::timestamptz) LOOP
        PERFORM compress_chunk(chunk, if_not_compressed => true);
        done := done + 1;
    END LOOP;
    RETURN done;
END
$$;

-- TimescaleDB: the configured compression and retention policies; false on plain PostgreSQL.
CREATE FUNCTION storage_apply_policies(compress_after_days integer, retention_days integer)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN false;
    END IF;
    PERFORM remove_compression_policy('telemetry_rows', if_exists => true);
    PERFORM add_compression_policy('telemetry_rows', make_interval(days => compress_after_days));
    PERFORM remove_retention_policy('telemetry_rows', if_exists => true);
    PERFORM add_retention_policy('telemetry_rows', make_interval(days => retention_days));
    RETURN true;
END
$$;

-- Only the roles granted it (vigil.db.roles.grant_app_rights) run these, not every login.
REVOKE EXECUTE ON FUNCTION ensure_telemetry_partitions(date, date), drop_telemetry_partitions(date),
    refresh_telemetry_hourly(integer), storage_drop_chunks_before(date),
    storage_compress_chunks_before(date), storage_apply_policies(integer, integer) FROM PUBLIC;
