-- Rescue policy per jurisdiction (rules R1, R4, R5), recorded with every decision it drives, and
-- the facts the safety review asked for: controller fault codes open incidents (R1), an incident
-- that follows a released one says so, a backup level can be staged.

-- rule R1: how long a condition must hold before it is an entrapment; rule R4: how long a
-- technician has to accept; rule R5: how long after property management the fire service is
-- called when nobody has arrived.
ALTER TABLE jurisdictions
    ADD COLUMN rescue_dwell_outside_door_zone_s integer NOT NULL DEFAULT 30
        CHECK (rescue_dwell_outside_door_zone_s > 0),
    ADD COLUMN rescue_dwell_at_floor_s integer NOT NULL DEFAULT 120
        CHECK (rescue_dwell_at_floor_s > 0),
    ADD COLUMN rescue_accept_timeout_s integer NOT NULL DEFAULT 120
        CHECK (rescue_accept_timeout_s > 0),
    ADD COLUMN rescue_fire_service_after_s integer NOT NULL DEFAULT 600
        CHECK (rescue_fire_service_after_s >= 0);

-- rule R1: GB/T 24476 codes 4 (stopped outside the unlocking zone) and 11 (trapped passenger).
ALTER TABLE rescue_incidents DROP CONSTRAINT rescue_incidents_trigger_check;
ALTER TABLE rescue_incidents ADD CONSTRAINT rescue_incidents_trigger_check CHECK (trigger IN (
    'alarm_button', 'stopped_outside_door_zone', 'trapped_at_floor', 'manual', 'fault_code'));

-- rule R6: when a released incident is superseded by a new entrapment, the new one names it.
ALTER TABLE rescue_incidents ADD COLUMN follows_incident_id bigint REFERENCES rescue_incidents (id);

-- rule R4: find a technician's open dispatches fast (a busy technician is not a candidate).
CREATE INDEX rescue_dispatches_technician_idx ON rescue_dispatches (technician_id)
    WHERE outcome IS NULL OR outcome = 'accepted';

-- rule R7: months are counted in the site's time zone.
CREATE OR REPLACE VIEW rescue_kpis_monthly AS
WITH steps AS (
    SELECT i.id, i.firm_id, i.jurisdiction_id, i.reported_at, i.arrival_deadline,
           date_trunc('month', i.reported_at AT TIME ZONE s.timezone)::date AS month,
           (SELECT min(at) FROM rescue_steps st
             WHERE st.incident_id = i.id AND st.step = 'accepted') AS accepted_at,
           (SELECT min(at) FROM rescue_steps st
             WHERE st.incident_id = i.id AND st.step = 'arrived') AS arrived_at,
           (SELECT min(at) FROM rescue_steps st
             WHERE st.incident_id = i.id AND st.step = 'released') AS released_at,
           EXISTS (SELECT 1 FROM rescue_breaches b WHERE b.incident_id = i.id) AS breached
    FROM rescue_incidents i JOIN sites s ON s.id = i.site_id
    WHERE i.status <> 'false_alarm'
)
SELECT firm_id, jurisdiction_id, month,
       count(*) AS incidents,
       avg(CASE WHEN accepted_at IS NOT NULL AND accepted_at - reported_at <= interval '3 minutes'
                THEN 1.0 ELSE 0.0 END) AS answered_within_3_min,
       avg(CASE WHEN arrived_at IS NOT NULL AND NOT breached THEN 1.0 ELSE 0.0 END)
           AS arrived_within_deadline,
       avg(extract(epoch FROM arrived_at - reported_at) / 60) AS mean_arrival_min,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM arrived_at - reported_at) / 60)
           AS p90_arrival_min,
       avg(extract(epoch FROM released_at - reported_at) / 60) AS mean_release_min
FROM steps
GROUP BY firm_id, jurisdiction_id, month;
