-- Rules M1, M2, M5, M6 at national scale: a sweep looks only at the elevators whose state can
-- change now, and engines share the fleet in shards of sites (docs/compliance.md).

-- When time alone can next move this elevator's state (a tier's last day on time passing, the
-- grace period or an override running out); NULL: never, only a change can (a verdict, a
-- contract: maintenance_recheck). Rows from before look at the next sweep (the epoch).
ALTER TABLE maintenance_escalations ADD COLUMN next_check_at timestamptz DEFAULT 'epoch';
ALTER TABLE maintenance_escalations ALTER COLUMN next_check_at DROP DEFAULT;
CREATE INDEX maintenance_escalations_next_check_idx
    ON maintenance_escalations (next_check_at) WHERE next_check_at IS NOT NULL;

-- Elevators to look at again whatever their timers say: their clocks, verdicts, contract or
-- registration changed. Filled by the triggers below, claimed by the sweep that examines them.
CREATE TABLE maintenance_recheck (
    device_id  topic_id PRIMARY KEY
);

-- How the fleet is cut into shards of sites (the same for every engine: a shard is the unit of
-- locking), and the generation of full sweeps: a change that can move any elevator (a policy,
-- a jurisdiction's lockout mode, a site's time zone) starts a new one, and each shard's next
-- sweep is then a full one.
CREATE TABLE maintenance_sweep_state (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    shards      integer NOT NULL DEFAULT 16 CHECK (shards BETWEEN 1 AND 4096),
    generation  bigint NOT NULL DEFAULT 1
);
INSERT INTO maintenance_sweep_state DEFAULT VALUES;

-- When each shard was last swept, and last fully (and for which generation).
CREATE TABLE maintenance_sweep_shards (
    shards           integer NOT NULL CHECK (shards > 0),
    shard            integer NOT NULL CHECK (shard >= 0 AND shard < shards),
    swept_at         timestamptz NOT NULL,
    full_swept_at    timestamptz NOT NULL,
    full_generation  bigint NOT NULL,
    PRIMARY KEY (shards, shard)
);

CREATE FUNCTION maintenance_recheck_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    device text;
BEGIN
    IF TG_TABLE_NAME = 'devices' THEN
        IF NEW.kind <> 'elevator' THEN
            RETURN NULL;
        END IF;
        device := NEW.id;
    ELSIF TG_OP = 'DELETE' THEN
        device := OLD.device_id;
    ELSE
        device := NEW.device_id;
    END IF;
    INSERT INTO maintenance_recheck (device_id) VALUES (device) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER maintenance_clocks_recheck
    AFTER INSERT OR UPDATE ON maintenance_clocks
    FOR EACH ROW EXECUTE FUNCTION maintenance_recheck_row();
CREATE TRIGGER maintenance_verdicts_recheck
    AFTER INSERT ON maintenance_verdicts
    FOR EACH ROW EXECUTE FUNCTION maintenance_recheck_row();
CREATE TRIGGER contracts_recheck
    AFTER INSERT OR UPDATE OR DELETE ON contracts
    FOR EACH ROW EXECUTE FUNCTION maintenance_recheck_row();
CREATE TRIGGER devices_recheck
    AFTER INSERT OR UPDATE OF kind, site_id, firm_id, registered_at, decommissioned_at
    ON devices
    FOR EACH ROW EXECUTE FUNCTION maintenance_recheck_row();

CREATE FUNCTION maintenance_full_sweep_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE maintenance_sweep_state SET generation = generation + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER compliance_policies_full_sweep
    AFTER INSERT OR UPDATE OR DELETE ON compliance_policies
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance_full_sweep_due();
CREATE TRIGGER jurisdictions_full_sweep
    AFTER UPDATE ON jurisdictions
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance_full_sweep_due();
CREATE TRIGGER sites_full_sweep
    AFTER UPDATE OF timezone, jurisdiction_id, user_unit_id ON sites
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance_full_sweep_due();
