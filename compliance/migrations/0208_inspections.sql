-- Rule L4: the inspection rounds of street lighting (002:L41-46).
--
-- Their intervals and limits are policy, like the condition thresholds (device over
-- jurisdiction over default): patrols a week, the days between pole-head box checks, cleaning,
-- grounding and insulation tests and calibration, and the measured limits (grounding at most
-- 4 ohm; insulation at least 0.5 Mohm, measured at 500 V).
ALTER TABLE condition_policies
    ADD COLUMN patrols_per_week    integer CHECK (patrols_per_week BETWEEN 1 AND 7),
    ADD COLUMN pole_box_days       integer CHECK (pole_box_days >= 1),
    ADD COLUMN cleaning_days       integer CHECK (cleaning_days >= 1),
    ADD COLUMN grounding_days      integer CHECK (grounding_days >= 1),
    ADD COLUMN insulation_days     integer CHECK (insulation_days >= 1),
    ADD COLUMN calibration_days    integer CHECK (calibration_days >= 1),
    ADD COLUMN grounding_max_ohm   double precision CHECK (grounding_max_ohm > 0),
    ADD COLUMN insulation_min_mohm double precision CHECK (insulation_min_mohm > 0),
    ADD COLUMN insulation_test_v   double precision CHECK (insulation_test_v > 0);
UPDATE condition_policies
SET patrols_per_week = 4, pole_box_days = 7, cleaning_days = 182, grounding_days = 365,
    insulation_days = 365, calibration_days = 365, grounding_max_ohm = 4.0,
    insulation_min_mohm = 0.5, insulation_test_v = 500.0
WHERE jurisdiction_id IS NULL AND device_id IS NULL;

CREATE OR REPLACE FUNCTION condition_default_policy_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.jurisdiction_id IS NULL AND OLD.device_id IS NULL THEN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'the default condition policy cannot be deleted';
        END IF;
        IF num_nulls(NEW.lamp_failed_below_w, NEW.relamp_share, NEW.nominal_voltage,
                     NEW.voltage_band, NEW.rollover_share, NEW.reading_interval_s,
                     NEW.missed_readings, NEW.lamp_power_band, NEW.anomaly_z,
                     NEW.anomaly_min_hours, NEW.anomaly_history_days,
                     NEW.dark_below_lux, NEW.patrols_per_week, NEW.pole_box_days,
                     NEW.cleaning_days, NEW.grounding_days, NEW.insulation_days,
                     NEW.calibration_days, NEW.grounding_max_ohm, NEW.insulation_min_mohm,
                     NEW.insulation_test_v) > 0 THEN
            RAISE EXCEPTION 'the default condition policy needs every value';
        END IF;
    END IF;
    RETURN COALESCE(NEW, OLD);
END
$$;

-- One round done: a patrol or remote review of a section (a site), or a check, cleaning,
-- measurement or calibration of one pole or mast. Measured values are kept with the limits they
-- were judged by and the verdict; a round is never changed (a wrong one is followed by a new).
CREATE TABLE inspection_rounds (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('patrol', 'remote_review', 'pole_box',
                                                  'cleaning', 'grounding', 'insulation',
                                                  'calibration')),
    site_id         bigint NOT NULL REFERENCES sites (id),
    device_id       topic_id REFERENCES devices (id),
    performed_at    timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    recorded_by     text NOT NULL,
    technician_id   bigint REFERENCES technicians (id),
    measured        double precision,
    unit            text,
    test_voltage_v  double precision CHECK (test_voltage_v > 0),
    passed          boolean NOT NULL,
    limits          jsonb NOT NULL DEFAULT '{}'::jsonb,
    note            text NOT NULL DEFAULT '',
    CHECK ((kind IN ('patrol', 'remote_review')) = (device_id IS NULL)),
    CHECK (performed_at <= recorded_at)
);
CREATE INDEX inspection_rounds_device_idx ON inspection_rounds (device_id, kind, performed_at);
CREATE INDEX inspection_rounds_site_idx ON inspection_rounds (site_id, kind, performed_at);

CREATE FUNCTION inspection_rounds_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'inspection rounds are never changed: record a new round';
END
$$;
CREATE TRIGGER inspection_rounds_immutable BEFORE UPDATE ON inspection_rounds
    FOR EACH ROW EXECUTE FUNCTION inspection_rounds_immutable();

-- A round not done in time (rule L4): a section's week with too few patrols, its day without a
-- review, or a device's check past its interval. Found once per period; a device's finding is
-- resolved by the round done late, a section's by rounds recorded late for that period.
CREATE TABLE inspection_findings (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL,
    site_id       bigint NOT NULL REFERENCES sites (id),
    device_id     topic_id REFERENCES devices (id),
    period_start  timestamptz NOT NULL,
    due_by        timestamptz NOT NULL,
    required      integer NOT NULL,
    done          integer NOT NULL,
    detected_at   timestamptz NOT NULL,
    policy        jsonb NOT NULL,
    resolved_at   timestamptz,
    resolved_by   bigint REFERENCES inspection_rounds (id)
);
CREATE UNIQUE INDEX inspection_findings_period_key
    ON inspection_findings (kind, site_id, coalesce(device_id::text, ''), period_start);
CREATE INDEX inspection_findings_open_idx ON inspection_findings (site_id)
    WHERE resolved_at IS NULL;
