-- Rule S2: an unresolved alarm escalates level by level up its chain (technician → supervisor →
-- manager → leadership) until it is resolved. Acknowledging it no longer stops the chain: the
-- remaining levels fire on a longer timer (each level's delay times the policy's factor).

ALTER DOMAIN alarm_audience DROP CONSTRAINT alarm_audience_check;
ALTER DOMAIN alarm_audience ADD CONSTRAINT alarm_audience_check CHECK (VALUE IN (
    'firm', 'duty_manager', 'firm_manager', 'technician', 'user_unit', 'property_management',
    'manufacturer', 'regulator', 'fire_service', 'platform', 'supervisor', 'leadership'))
    -- NOT VALID: PostgreSQL cannot re-check a domain used in array columns; every stored value
    -- is in the old, smaller set, and new values are checked
    NOT VALID;

ALTER TABLE escalation_policies
    ADD COLUMN acknowledged_factor numeric NOT NULL DEFAULT 4 CHECK (acknowledged_factor >= 1);

-- Who each audience is for an alarm's source. New: a firm's supervisor and leadership, and the
-- technicians assigned to a device (rule S2's first level).
CREATE OR REPLACE FUNCTION alerts_parties(p_source_type text, p_source_id text)
RETURNS TABLE (audience text, party_type text, party_id bigint)
LANGUAGE sql STABLE AS $$
    WITH device AS (
        SELECT d.firm_id, d.manufacturer_id, s.user_unit_id, s.jurisdiction_id
        FROM devices d JOIN sites s ON s.id = d.site_id
        WHERE p_source_type = 'device' AND d.id = p_source_id
    ), site AS (
        SELECT s.user_unit_id, s.jurisdiction_id FROM sites s
        WHERE p_source_type = 'site' AND s.id::text = p_source_id
    ), tech AS (
        SELECT t.id, t.firm_id FROM technicians t
        WHERE p_source_type = 'technician' AND t.id::text = p_source_id
        UNION
        SELECT ta.technician_id, t.firm_id FROM technician_assignments ta
        JOIN technicians t ON t.id = ta.technician_id
        WHERE p_source_type = 'device' AND ta.device_id = p_source_id AND t.active
    ), firm AS (
        SELECT firm_id FROM device WHERE firm_id IS NOT NULL
        UNION SELECT t.firm_id FROM technicians t
              WHERE p_source_type = 'technician' AND t.id::text = p_source_id
        UNION SELECT f.id FROM maintenance_firms f
              WHERE p_source_type = 'firm' AND f.id::text = p_source_id
    ), unit AS (
        SELECT user_unit_id FROM device UNION SELECT user_unit_id FROM site
    ), juris AS (
        SELECT jurisdiction_id FROM device UNION SELECT jurisdiction_id FROM site
    )
    SELECT a, 'firm', firm_id FROM firm,
        unnest(ARRAY['firm', 'duty_manager', 'firm_manager', 'supervisor', 'leadership']) a
    UNION ALL
    SELECT a, 'user_unit', user_unit_id FROM unit, unnest(ARRAY['user_unit', 'property_management']) a
    UNION ALL
    SELECT 'manufacturer', 'manufacturer', manufacturer_id FROM device
        WHERE manufacturer_id IS NOT NULL
    UNION ALL
    SELECT a, 'jurisdiction', jurisdiction_id FROM juris, unnest(ARRAY['regulator', 'fire_service']) a
    UNION ALL
    SELECT 'technician', 'technician', id FROM tech
    UNION ALL
    SELECT 'platform', 'platform', NULL::bigint
$$;

-- When a level falls due on an alarm: its delay after the run started, stretched by the policy's
-- factor once the alarm is acknowledged (rule S2: slower, but never stopped until cleared).
CREATE FUNCTION alerts_level_due(p_alarm alarms, p_after_s integer, p_factor numeric)
RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT p_alarm.escalation_started_at + make_interval(
        secs => p_after_s * CASE WHEN p_alarm.state = 'acknowledged' THEN p_factor ELSE 1 END)
$$;

CREATE OR REPLACE FUNCTION alerts_fire_due(p_now timestamptz)
RETURNS TABLE (alarm_id bigint, run integer, level integer) LANGUAGE plpgsql AS $$
DECLARE
    due record;
    fired alarms;
BEGIN
    FOR due IN
        SELECT a.id, a.escalation_run, l.level, l.audience
        FROM alarms a
        JOIN escalation_policies p ON p.id = a.policy_id
        JOIN escalation_levels l ON l.policy_id = a.policy_id
        WHERE a.state IN ('active', 'acknowledged')
          AND alerts_level_due(a, l.after_s, p.acknowledged_factor) <= p_now
          AND NOT EXISTS (SELECT 1 FROM escalation_firings f
                          WHERE f.alarm_id = a.id AND f.run = a.escalation_run
                            AND f.level = l.level)
        ORDER BY a.id, l.level
        FOR UPDATE OF a SKIP LOCKED
    LOOP
        INSERT INTO escalation_firings (alarm_id, run, level, fired_at)
        VALUES (due.id, due.escalation_run, due.level, p_now)
        ON CONFLICT DO NOTHING;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO fired FROM alarms WHERE id = due.id;
        INSERT INTO alarm_changes (alarm_id, change, at, actor, detail)
        VALUES (due.id, 'escalated', p_now, 'escalation',
                jsonb_build_object('run', due.escalation_run, 'level', due.level,
                                   'audience', due.audience, 'state', fired.state));
        PERFORM alerts_enqueue(fired, 'escalation level ' || due.level, due.audience::text[],
                               p_now);
        PERFORM alerts_announce(fired, 'escalated');
        alarm_id := due.id;
        run := due.escalation_run;
        level := due.level;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION alerts_next_escalation() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT min(alerts_level_due(a, l.after_s, p.acknowledged_factor))
    FROM alarms a
    JOIN escalation_policies p ON p.id = a.policy_id
    JOIN escalation_levels l ON l.policy_id = a.policy_id
    WHERE a.state IN ('active', 'acknowledged')
      AND NOT EXISTS (SELECT 1 FROM escalation_firings f
                      WHERE f.alarm_id = a.id AND f.run = a.escalation_run AND f.level = l.level)
$$;
