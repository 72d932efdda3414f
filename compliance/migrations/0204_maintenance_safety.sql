-- Maintenance safety review (rules M3, M5, M6): duplicate visits judged on the evidence, overrides
-- that expire, and the platform's own check that a car is safe to lock out.

-- Rule M3: the whole inspection interval a verdict rests on, not clipped to the claimed window,
-- so that one visit written up as two records is found as a duplicate.
ALTER TABLE maintenance_verdicts ADD COLUMN evidence_span tstzrange;
CREATE INDEX maintenance_verdicts_span_idx ON maintenance_verdicts
    USING gist (device_id, evidence_span) WHERE verdict = 'verified';

-- Rule M6: an authorised override lifts a lockout for this long; then the lockout resumes unless
-- a verified visit came first.
ALTER TABLE compliance_policies ADD COLUMN override_hours integer CHECK (override_hours > 0);
UPDATE compliance_policies SET override_hours = 24
WHERE jurisdiction_id IS NULL AND contract_id IS NULL;

-- Rule M6, from the platform's own latest state (it does not take the device's word alone): the
-- car is idle, in a door zone, nobody inside and (with p_doors_open) its doors open. NULL when the
-- device has never reported one of the four, so the platform cannot tell. A lockout is sent to
-- an idle, empty car at a landing (the controller's out-of-service mode then opens the doors and
-- applies it) and recorded as applied only once the doors are seen open too.
CREATE FUNCTION maintenance_car_is_safe(p_device text, p_doors_open boolean DEFAULT true)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN count(*) < 4 THEN NULL
                ELSE bool_and(CASE s.metric WHEN 'car_status' THEN s.value = 0
                                            WHEN 'door_zone' THEN s.value = 1
                                            WHEN 'door_state' THEN s.value = 2 OR NOT p_doors_open
                                            WHEN 'passengers' THEN s.value = 0 END
                              AND s.good)
           END
    FROM device_state s
    WHERE s.device_id = p_device
      AND s.metric IN ('car_status', 'door_zone', 'door_state', 'passengers')
$$;
