-- Work orders and service levels (rules S1-S6): every fault, lamp failure, meter alarm, failed
-- maintenance verdict, rescue that needs repair, complaint or patrol finding becomes tracked work
-- with deadlines; each step is kept (append-only) and logged (rule A1).

-- Rule S1: graded service levels. A profile gives, for each of the four levels, the minutes to
-- respond, to escalate an unresolved item (S2), to restore service, and to be on site in a city
-- and in a province. A contract names its profiles in ``terms.service_levels``; where several
-- apply, the strictest value of each wins. The built-in profiles are RULES.md's defaults.
CREATE TABLE service_level_profiles (
    code        text PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    name        text NOT NULL CHECK (name <> ''),
    built_in    boolean NOT NULL DEFAULT false
);

CREATE TABLE service_level_targets (
    profile_code        text NOT NULL REFERENCES service_level_profiles (code) ON DELETE CASCADE,
    level               smallint NOT NULL CHECK (level BETWEEN 1 AND 4),
    respond_min         integer NOT NULL CHECK (respond_min >= 0),
    escalate_after_min  integer NOT NULL CHECK (escalate_after_min >= 0),
    restore_min         integer CHECK (restore_min > 0),  -- none: a non-fault restores nothing
    on_site_city_min    integer NOT NULL CHECK (on_site_city_min > 0),
    on_site_province_min integer NOT NULL CHECK (on_site_province_min > 0),
    PRIMARY KEY (profile_code, level)
);

INSERT INTO service_level_profiles (code, name, built_in) VALUES
    ('s1-default', 'Graded faults, default profile (rule S1)', true),
    ('s6-general', 'Street lighting and meters: general faults in 24 h, emergencies at once (S6, L3)', true);

-- rule S1 (003:L979-1069): level 1 severe, 2 major, 3 general, 4 non-fault
INSERT INTO service_level_targets VALUES
    ('s1-default', 1, 5, 0, 240, 40, 300),
    ('s1-default', 2, 10, 30, 240, 60, 360),
    ('s1-default', 3, 10, 60, 240, 60, 480),
    ('s1-default', 4, 10, 60, NULL, 120, 600),
-- rule S6 (002:L131): general faults dispatched within 24 h and fixed within 24 h of that;
-- emergencies at once, on site within 30 minutes (rule L3)
    ('s6-general', 1, 5, 0, 240, 30, 30),
    ('s6-general', 2, 60, 240, 1440, 240, 480),
    ('s6-general', 3, 1440, 1440, 2880, 1440, 1440),
    ('s6-general', 4, 1440, 1440, NULL, 2880, 2880);

-- Working-day calendar per jurisdiction (rule S3 counts working days): weekends are rest days
-- unless listed as make-up working days (调休); public holidays are listed as rest days.
CREATE TABLE calendar_days (
    jurisdiction_id  bigint NOT NULL REFERENCES jurisdictions (id),
    day              date NOT NULL,
    working          boolean NOT NULL,
    name             text NOT NULL DEFAULT '',
    PRIMARY KEY (jurisdiction_id, day)
);

CREATE TABLE work_orders (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id       topic_id NOT NULL REFERENCES devices (id),
    site_id         bigint NOT NULL REFERENCES sites (id),
    firm_id         bigint REFERENCES maintenance_firms (id),  -- the firm in force when opened
    kind            text NOT NULL CHECK (kind IN (
                        'fault_repair', 'emergency_repair', 'lamp_replacement', 'mast_relamping',
                        'meter_fault', 'inspection_task', 'complaint_follow_up',
                        'corrective_work')),
    -- one open work order per device and cause; a repeat attaches to it
    cause           text NOT NULL CHECK (cause ~ '^[a-z][a-z0-9_.:-]{0,127}$'),
    level           smallint NOT NULL CHECK (level BETWEEN 1 AND 4),
    origin          text NOT NULL CHECK (origin IN (
                        'alarm', 'rescue', 'maintenance_verdict', 'phone', 'complaint',
                        'patrol', 'console')),
    source_ref      text,  -- what opened it: alarm (id and trigger), incident or verdict id
    title           text NOT NULL CHECK (title <> ''),
    status          text NOT NULL DEFAULT 'opened' CHECK (status IN (
                        'opened', 'assigned', 'accepted', 'on_site', 'resolved', 'closed',
                        'cancelled')),
    zone            text NOT NULL CHECK (zone IN ('city', 'province')),
    -- the service-level values in force and the profiles they came from (recorded with the
    -- decision they drive)
    service_level   jsonb NOT NULL,
    opened_at       timestamptz NOT NULL,
    respond_by      timestamptz NOT NULL,
    escalate_at     timestamptz NOT NULL,
    on_site_by      timestamptz NOT NULL,
    restore_by      timestamptz,
    technician_id   bigint REFERENCES technicians (id),
    responded_at    timestamptz,
    on_site_at      timestamptz,
    resolved_at     timestamptz,
    closed_at       timestamptz,
    repeats         integer NOT NULL DEFAULT 0 CHECK (repeats >= 0),
    last_repeat_at  timestamptz,
    -- rule S5: the same fault on the same asset within 30 days of an earlier one
    repeat_of       bigint REFERENCES work_orders (id),
    CHECK ((status IN ('closed', 'cancelled')) = (closed_at IS NOT NULL))
);
CREATE UNIQUE INDEX work_orders_one_open_idx ON work_orders (device_id, cause)
    WHERE status IN ('opened', 'assigned', 'accepted', 'on_site');
CREATE INDEX work_orders_firm_idx ON work_orders (firm_id, status);
CREATE INDEX work_orders_device_idx ON work_orders (device_id, opened_at);

-- Every source taken (an alarm raised or raised again, a rescue, a verdict), with the order it
-- opened or was counted on: a source is taken once, whatever restarts or engines run.
CREATE TABLE work_order_sources (
    origin          text NOT NULL,
    source_ref      text NOT NULL,
    work_order_id   bigint NOT NULL REFERENCES work_orders (id),
    taken_at        timestamptz NOT NULL,
    PRIMARY KEY (origin, source_ref)
);

-- Every step, append-only: when, who, what was noted.
CREATE TABLE work_order_steps (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_order_id   bigint NOT NULL REFERENCES work_orders (id),
    step            text NOT NULL CHECK (step IN (
                        'opened', 'repeated', 'responded', 'assigned', 'accepted', 'on_site',
                        'resolved', 'callback', 'closed', 'cancelled', 'breach', 'escalated',
                        'note')),
    at              timestamptz NOT NULL,
    actor           text NOT NULL CHECK (actor <> ''),
    note            text NOT NULL DEFAULT '',
    details         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX work_order_steps_order_idx ON work_order_steps (work_order_id, id);

-- Kept, never changed; deleted only by the retention purge (rule A3, compliance 0205).
CREATE TRIGGER work_order_steps_append_only BEFORE UPDATE OR DELETE ON work_order_steps
    FOR EACH ROW EXECUTE FUNCTION retention_guard();

-- A missed deadline, recorded once: it stays a breach when the work is done later.
CREATE TABLE work_order_breaches (
    work_order_id   bigint NOT NULL REFERENCES work_orders (id),
    deadline        text NOT NULL CHECK (deadline IN ('respond', 'on_site', 'restore')),
    due_at          timestamptz NOT NULL,
    detected_at     timestamptz NOT NULL,
    PRIMARY KEY (work_order_id, deadline)
);

-- Rule S2: an unresolved work order escalates up its chain until it is resolved.
INSERT INTO escalation_policies (name, acknowledged_factor) VALUES ('work-order', 1);
INSERT INTO escalation_levels (policy_id, level, after_s, audience)
SELECT id, level, after_s, audience::alarm_audience[] FROM escalation_policies,
    (VALUES (1, 0, '{technician,firm}'),
            (2, 1800, '{supervisor}'),
            (3, 3600, '{firm_manager}'),
            (4, 7200, '{leadership}')) AS l (level, after_s, audience)
WHERE name = 'work-order';

-- Rule S4: every resolved work order gets a callback to the customer before it closes; an
-- unreached customer is tried again and the attempts are reported.
CREATE TABLE work_order_callbacks (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_order_id   bigint NOT NULL REFERENCES work_orders (id),
    at              timestamptz NOT NULL,
    actor           text NOT NULL CHECK (actor <> ''),
    reached         boolean NOT NULL,
    satisfaction    smallint CHECK (satisfaction BETWEEN 1 AND 5),
    note            text NOT NULL DEFAULT '',
    CHECK (reached OR satisfaction IS NULL)
);
CREATE INDEX work_order_callbacks_order_idx ON work_order_callbacks (work_order_id, id);
