-- Rescue of trapped passengers (rules R1-R8): incidents, their append-only steps, dispatches,
-- breaches, technicians' last known locations and firms' service points.
-- (alarms live in the alerts package, migrated later: incidents keep the alarm id unlinked.)

CREATE TABLE technician_locations (
    technician_id  bigint PRIMARY KEY REFERENCES technicians (id),
    latitude       double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude      double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    reported_at    timestamptz NOT NULL
);

-- rule R8: where a firm's technicians start from.
CREATE TABLE service_points (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    firm_id     bigint NOT NULL REFERENCES maintenance_firms (id),
    name        text NOT NULL,
    latitude    double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    UNIQUE (firm_id, name)
);

CREATE TABLE rescue_incidents (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id         topic_id NOT NULL REFERENCES devices (id),
    site_id           bigint NOT NULL REFERENCES sites (id),
    firm_id           bigint REFERENCES maintenance_firms (id),
    jurisdiction_id   bigint NOT NULL REFERENCES jurisdictions (id),
    trigger           text NOT NULL CHECK (trigger IN (
                          'alarm_button', 'stopped_outside_door_zone', 'trapped_at_floor',
                          'manual')),
    -- rule R2: the values in force when the incident opened
    tier              rescue_tier NOT NULL,
    deadline_minutes  integer NOT NULL CHECK (deadline_minutes > 0),
    clock_from        text NOT NULL CHECK (clock_from IN ('report', 'dispatch')),
    reported_at       timestamptz NOT NULL,
    arrival_deadline  timestamptz,
    status            text NOT NULL DEFAULT 'reported' CHECK (status IN (
                          'reported', 'dispatched', 'accepted', 'arrived', 'released', 'closed',
                          'false_alarm')),
    alarm_id          bigint,
    closed_at         timestamptz,
    CHECK ((status IN ('closed', 'false_alarm')) = (closed_at IS NOT NULL)),
    CHECK (clock_from = 'dispatch' OR arrival_deadline IS NOT NULL)
);
-- rule R1: one open incident per elevator; later signals attach to it.
CREATE UNIQUE INDEX rescue_incidents_one_open_idx ON rescue_incidents (device_id)
    WHERE closed_at IS NULL;
CREATE INDEX rescue_incidents_reported_idx ON rescue_incidents (reported_at);

-- What an incident was opened with never changes; a deadline, once set, never moves.
CREATE FUNCTION rescue_incidents_keep_facts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.device_id <> OLD.device_id OR NEW.reported_at <> OLD.reported_at
       OR NEW.trigger <> OLD.trigger OR NEW.tier <> OLD.tier
       OR NEW.deadline_minutes <> OLD.deadline_minutes OR NEW.clock_from <> OLD.clock_from
       OR (OLD.arrival_deadline IS NOT NULL
           AND NEW.arrival_deadline IS DISTINCT FROM OLD.arrival_deadline)
       OR (OLD.closed_at IS NOT NULL AND NEW.closed_at IS DISTINCT FROM OLD.closed_at) THEN
        RAISE EXCEPTION 'rescue incident %: recorded facts cannot be changed', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER rescue_incidents_keep_facts BEFORE UPDATE ON rescue_incidents
    FOR EACH ROW EXECUTE FUNCTION rescue_incidents_keep_facts();
CREATE TRIGGER rescue_incidents_no_delete BEFORE DELETE ON rescue_incidents
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();

-- rule R6: every step with its own time and actor; never updated or deleted.
CREATE TABLE rescue_steps (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id    bigint NOT NULL REFERENCES rescue_incidents (id),
    step           text NOT NULL CHECK (step IN (
                       'reported', 'signal', 'dispatched', 'dispatch_timeout', 'accepted',
                       'escalated', 'arrived', 'released', 'closed', 'false_alarm', 'breach')),
    at             timestamptz NOT NULL,
    actor          text NOT NULL CHECK (actor <> ''),
    technician_id  bigint REFERENCES technicians (id),
    detail         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE UNIQUE INDEX rescue_steps_once_idx ON rescue_steps (incident_id, step)
    WHERE step IN ('reported', 'accepted', 'arrived', 'released', 'closed', 'false_alarm');
CREATE INDEX rescue_steps_incident_idx ON rescue_steps (incident_id, id);
CREATE TRIGGER rescue_steps_append_only BEFORE UPDATE OR DELETE ON rescue_steps
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();

-- rule R4: one row per technician asked; at most one awaiting an answer per incident.
CREATE TABLE rescue_dispatches (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id         bigint NOT NULL REFERENCES rescue_incidents (id),
    technician_id       bigint NOT NULL REFERENCES technicians (id),
    rank                integer NOT NULL CHECK (rank >= 1),
    estimated_travel_s  double precision NOT NULL CHECK (estimated_travel_s >= 0),
    estimated_arrival   timestamptz NOT NULL,
    dispatched_at       timestamptz NOT NULL,
    accept_by           timestamptz NOT NULL CHECK (accept_by > dispatched_at),
    outcome             text CHECK (outcome IN ('accepted', 'timed_out', 'cancelled')),
    outcome_at          timestamptz,
    CHECK ((outcome IS NULL) = (outcome_at IS NULL)),
    UNIQUE (incident_id, technician_id)
);
CREATE UNIQUE INDEX rescue_dispatches_open_idx ON rescue_dispatches (incident_id)
    WHERE outcome IS NULL;

-- An answer is given once.
CREATE FUNCTION rescue_dispatches_answer_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.outcome IS NOT NULL
       OR (NEW.id, NEW.incident_id, NEW.technician_id, NEW.rank, NEW.estimated_travel_s,
           NEW.estimated_arrival, NEW.dispatched_at, NEW.accept_by)
          IS DISTINCT FROM
          (OLD.id, OLD.incident_id, OLD.technician_id, OLD.rank, OLD.estimated_travel_s,
           OLD.estimated_arrival, OLD.dispatched_at, OLD.accept_by) THEN
        RAISE EXCEPTION 'dispatch %: already answered or fixed', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER rescue_dispatches_answer_once BEFORE UPDATE ON rescue_dispatches
    FOR EACH ROW EXECUTE FUNCTION rescue_dispatches_answer_once();
CREATE TRIGGER rescue_dispatches_no_delete BEFORE DELETE ON rescue_dispatches
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();

-- rule R6: a breach stays a breach.
CREATE TABLE rescue_breaches (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES rescue_incidents (id),
    kind         text NOT NULL CHECK (kind IN ('arrival_deadline')),
    deadline     timestamptz NOT NULL,
    detected_at  timestamptz NOT NULL,
    UNIQUE (incident_id, kind)
);
CREATE TRIGGER rescue_breaches_append_only BEFORE UPDATE OR DELETE ON rescue_breaches
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();

-- rule R7: per firm, region (jurisdiction) and month.
CREATE VIEW rescue_kpis_monthly AS
WITH steps AS (
    SELECT i.id, i.firm_id, i.jurisdiction_id, i.reported_at, i.arrival_deadline,
           date_trunc('month', i.reported_at AT TIME ZONE 'UTC')::date AS month,
           (SELECT min(at) FROM rescue_steps s
             WHERE s.incident_id = i.id AND s.step = 'accepted') AS accepted_at,
           (SELECT min(at) FROM rescue_steps s
             WHERE s.incident_id = i.id AND s.step = 'arrived') AS arrived_at,
           (SELECT min(at) FROM rescue_steps s
             WHERE s.incident_id = i.id AND s.step = 'released') AS released_at,
           EXISTS (SELECT 1 FROM rescue_breaches b WHERE b.incident_id = i.id) AS breached
    FROM rescue_incidents i
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
