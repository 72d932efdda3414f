-- The thresholds of the condition checks (rules L1, L2, L5, E1-E4), every one a default of
-- RULES.md: the row with neither jurisdiction nor device holds the defaults; a jurisdiction row
-- or a device row overrides any non-null value (device over jurisdiction over default). The
-- values in force are recorded with each alarm they raise.
CREATE TABLE condition_policies (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jurisdiction_id      bigint UNIQUE REFERENCES jurisdictions (id),
    device_id            topic_id UNIQUE REFERENCES devices (id) ON DELETE CASCADE,
    lamp_failed_below_w  double precision CHECK (lamp_failed_below_w >= 0),
    relamp_share         double precision CHECK (relamp_share > 0 AND relamp_share <= 1),
    nominal_voltage      double precision CHECK (nominal_voltage > 0),
    voltage_band         double precision CHECK (voltage_band > 0 AND voltage_band < 1),
    rollover_share       double precision CHECK (rollover_share > 0.5 AND rollover_share < 1),
    -- rule E1: a meter is read at least this often; silent for this many periods, it is lost
    reading_interval_s   double precision CHECK (reading_interval_s > 0),
    missed_readings      integer CHECK (missed_readings >= 1),
    -- rule L5: the rated power of one lamp (none: unknown, power not judged) and the band
    -- around rated x dim level that lamp power stays in
    lamp_rated_w         double precision CHECK (lamp_rated_w > 0),
    lamp_power_band      double precision CHECK (lamp_power_band > 0 AND lamp_power_band < 1),
    -- rule E3: an hour's consumption whose robust z-score (median/MAD over the meter's own
    -- history of anomaly_history_days) exceeds anomaly_z, judged after anomaly_min_hours
    anomaly_z            double precision CHECK (anomaly_z > 0),
    anomaly_min_hours    integer CHECK (anomaly_min_hours >= 3),
    anomaly_history_days integer CHECK (anomaly_history_days >= 1),
    -- rule L1: when a lamp should be lit: between lit_from_h and lit_until_h (local hours) for a
    -- pole on a schedule, else while its photocell reads below dark_below_lux
    dark_below_lux       double precision CHECK (dark_below_lux > 0),
    lit_from_h           double precision CHECK (lit_from_h >= 0 AND lit_from_h < 24),
    lit_until_h          double precision CHECK (lit_until_h >= 0 AND lit_until_h < 24),
    CHECK ((lit_from_h IS NULL) = (lit_until_h IS NULL)),
    CHECK (jurisdiction_id IS NULL OR device_id IS NULL)
);
CREATE UNIQUE INDEX condition_policies_default_idx ON condition_policies ((true))
    WHERE jurisdiction_id IS NULL AND device_id IS NULL;
INSERT INTO condition_policies (
    lamp_failed_below_w, relamp_share, nominal_voltage, voltage_band, rollover_share,
    reading_interval_s, missed_readings, lamp_power_band, anomaly_z, anomaly_min_hours,
    anomaly_history_days, dark_below_lux)
VALUES (1.0, 0.4, 230.0, 0.10, 0.9, 300.0, 3, 0.2, 3.5, 72, 28, 10.0);

CREATE FUNCTION condition_default_policy_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.jurisdiction_id IS NULL AND OLD.device_id IS NULL THEN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'the default condition policy cannot be deleted';
        END IF;
        IF num_nulls(NEW.lamp_failed_below_w, NEW.relamp_share, NEW.nominal_voltage,
                     NEW.voltage_band, NEW.rollover_share, NEW.reading_interval_s,
                     NEW.missed_readings, NEW.lamp_power_band, NEW.anomaly_z,
                     NEW.anomaly_min_hours, NEW.anomaly_history_days,
                     NEW.dark_below_lux) > 0 THEN
            RAISE EXCEPTION 'the default condition policy needs every value';
        END IF;
    END IF;
    RETURN COALESCE(NEW, OLD);
END
$$;
CREATE TRIGGER condition_default_policy_guard BEFORE UPDATE OR DELETE ON condition_policies
    FOR EACH ROW EXECUTE FUNCTION condition_default_policy_guard();
