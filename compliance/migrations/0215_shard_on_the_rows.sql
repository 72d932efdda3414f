-- Rules M1-M6 at national scale: an incremental sweep found its shard's due elevators by
-- joining the whole fleet and hashing every site, once per shard (16 scans of a million
-- devices a sweep). The site now rides on the rows it claims: a timer's escalation row and a
-- recheck, so that it reads only the rows due.
ALTER TABLE maintenance_escalations ADD COLUMN site_id bigint;
UPDATE maintenance_escalations e SET site_id = d.site_id FROM devices d WHERE d.id = e.device_id;
-- A site's bucket, of 4,096: a shard is the buckets b with b mod shards = shard (shards is at
-- most 4,096), so that a shard's timers are read from an index by bucket, each shard reading
-- only its own rows (reading every due row and keeping a shard's cost 16 scans of a day's
-- 70,000 due rows at a million lifts).
ALTER TABLE maintenance_escalations ADD COLUMN site_bucket integer
    GENERATED ALWAYS AS (mod(abs(hashtext(site_id::text)), 4096)) STORED;
DROP INDEX maintenance_escalations_next_check_idx;
CREATE INDEX maintenance_escalations_bucket_next_check_idx
    ON maintenance_escalations (site_bucket, next_check_at) WHERE next_check_at IS NOT NULL;
ALTER TABLE maintenance_recheck ADD COLUMN site_id bigint;
UPDATE maintenance_recheck r SET site_id = d.site_id FROM devices d WHERE d.id = r.device_id;
-- claimed by bucket too: a refresh of every clock queues the whole fleet, and the shards'
-- claims then read only their own rows, not a million dead ones each
ALTER TABLE maintenance_recheck ADD COLUMN site_bucket integer
    GENERATED ALWAYS AS (mod(abs(hashtext(site_id::text)), 4096)) STORED;
CREATE INDEX maintenance_recheck_bucket_idx ON maintenance_recheck (site_bucket);

-- one elevator's change (its registration, a contract): queued with its site now
CREATE OR REPLACE FUNCTION maintenance_recheck_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'devices' THEN
        IF NEW.kind <> 'elevator' THEN
            RETURN NULL;
        END IF;
        INSERT INTO maintenance_recheck (device_id, site_id) VALUES (NEW.id, NEW.site_id)
        ON CONFLICT (device_id) DO UPDATE SET site_id = excluded.site_id;
        RETURN NULL;
    END IF;
    INSERT INTO maintenance_recheck (device_id, site_id)
    SELECT d.id, d.site_id FROM devices d
    WHERE d.id = CASE WHEN TG_OP = 'DELETE' THEN OLD.device_id ELSE NEW.device_id END
    ON CONFLICT (device_id) DO UPDATE SET site_id = excluded.site_id;
    RETURN NULL;
END $$;

-- verdicts and clocks come in batches (a night's records, a refresh of every clock): queued
-- once per statement, each elevator once
CREATE FUNCTION maintenance_recheck_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO maintenance_recheck (device_id, site_id)
    SELECT d.id, d.site_id FROM devices d
    WHERE d.id IN (SELECT c.device_id FROM changed c)
    ON CONFLICT (device_id) DO UPDATE SET site_id = excluded.site_id;
    RETURN NULL;
END $$;

DROP TRIGGER maintenance_verdicts_recheck ON maintenance_verdicts;
CREATE TRIGGER maintenance_verdicts_recheck
    AFTER INSERT ON maintenance_verdicts REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance_recheck_rows();
DROP TRIGGER maintenance_clocks_recheck ON maintenance_clocks;
CREATE TRIGGER maintenance_clocks_recheck_insert
    AFTER INSERT ON maintenance_clocks REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance_recheck_rows();
CREATE TRIGGER maintenance_clocks_recheck_update
    AFTER UPDATE ON maintenance_clocks REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance_recheck_rows();
