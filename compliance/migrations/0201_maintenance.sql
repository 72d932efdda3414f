-- Maintenance compliance (rules M1-M11): policies, immutable records, sign-offs, evidence
-- verdicts, due clocks, the escalation state machine, drills, certified components and findings.

-- Values in force (every number of RULES.md is a default). The row with neither jurisdiction nor
-- contract holds the defaults; a jurisdiction row or a contract row overrides any non-null value
-- (contract over jurisdiction over default).
CREATE TABLE compliance_policies (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jurisdiction_id             bigint UNIQUE REFERENCES jurisdictions (id),
    contract_id                 bigint UNIQUE REFERENCES contracts (id),
    half_monthly_days           integer CHECK (half_monthly_days > 0),
    quarterly_days              integer CHECK (quarterly_days > 0),
    semi_annual_days            integer CHECK (semi_annual_days > 0),
    annual_days                 integer CHECK (annual_days > 0),
    due_soon_days               integer CHECK (due_soon_days >= 0),
    grace_hours                 integer CHECK (grace_hours >= 0),
    min_onsite_minutes          integer CHECK (min_onsite_minutes > 0),
    evidence_slack_hours        integer CHECK (evidence_slack_hours >= 0),
    drill_interval_days         integer CHECK (drill_interval_days > 0),
    selftest_interval_hours     integer CHECK (selftest_interval_hours > 0),
    qualification_warning_days  integer CHECK (qualification_warning_days >= 0),
    lockout_retry_minutes       integer CHECK (lockout_retry_minutes > 0),
    -- null: the jurisdiction's own lockout_mode (rule M6)
    lockout_mode                text CHECK (lockout_mode IN ('enforce', 'recommend')),
    CHECK (jurisdiction_id IS NULL OR contract_id IS NULL)
);
CREATE UNIQUE INDEX compliance_policies_default_idx ON compliance_policies ((true))
    WHERE jurisdiction_id IS NULL AND contract_id IS NULL;
INSERT INTO compliance_policies (
    half_monthly_days, quarterly_days, semi_annual_days, annual_days, due_soon_days, grace_hours,
    min_onsite_minutes, evidence_slack_hours, drill_interval_days, selftest_interval_hours,
    qualification_warning_days, lockout_retry_minutes)
VALUES (15, 90, 180, 365, 3, 72, 20, 24, 365, 72, 30, 5);

CREATE FUNCTION compliance_default_policy_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.jurisdiction_id IS NULL AND OLD.contract_id IS NULL THEN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'the default compliance policy cannot be deleted';
        END IF;
        IF num_nulls(NEW.half_monthly_days, NEW.quarterly_days, NEW.semi_annual_days,
                     NEW.annual_days, NEW.due_soon_days, NEW.grace_hours, NEW.min_onsite_minutes,
                     NEW.evidence_slack_hours, NEW.drill_interval_days,
                     NEW.selftest_interval_hours, NEW.qualification_warning_days,
                     NEW.lockout_retry_minutes) > 0 THEN
            RAISE EXCEPTION 'the default compliance policy needs every value';
        END IF;
    END IF;
    RETURN COALESCE(NEW, OLD);
END
$$;
CREATE TRIGGER compliance_default_policy_guard BEFORE UPDATE OR DELETE ON compliance_policies
    FOR EACH ROW EXECUTE FUNCTION compliance_default_policy_guard();

-- Rule M9: the certified model of each safety component on an elevator's record.
CREATE TABLE certified_components (
    device_id   topic_id NOT NULL REFERENCES devices (id),
    component   text NOT NULL CHECK (component ~ '^[a-z][a-z0-9_]{0,63}$'),
    model       text NOT NULL CHECK (model <> ''),
    PRIMARY KEY (device_id, component)
);

-- Rules M2, M4: a maintenance record, immutable once saved. A correction is a new record that
-- references the one it corrects (at most one correction per record: a linear history).
CREATE TABLE maintenance_records (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id        topic_id NOT NULL REFERENCES devices (id),
    technician_id    bigint NOT NULL,
    firm_id          bigint NOT NULL,
    tier             text NOT NULL
                     CHECK (tier IN ('half_monthly', 'quarterly', 'semi_annual', 'annual')),
    claimed_start    timestamptz NOT NULL,
    claimed_end      timestamptz NOT NULL,
    checklist_done   text[] NOT NULL,
    checklist_total  integer NOT NULL CHECK (checklist_total > 0),
    -- the highest tier whose cumulative checklist is complete: what the visit can reset (M2)
    credited_tier    text CHECK (credited_tier IN ('half_monthly', 'quarterly', 'semi_annual',
                                                   'annual')),
    parts            jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(parts) = 'array'),
    notes            text NOT NULL DEFAULT '',
    corrects_id      bigint UNIQUE REFERENCES maintenance_records (id),
    correction_reason text,
    recorded_by      text NOT NULL,
    recorded_at      timestamptz NOT NULL,
    FOREIGN KEY (technician_id, firm_id) REFERENCES technicians (id, firm_id),
    CHECK (claimed_end > claimed_start),
    CHECK ((corrects_id IS NULL) = (correction_reason IS NULL))
);
CREATE INDEX maintenance_records_device_idx ON maintenance_records (device_id, claimed_start);

-- Rule M4: the user unit's safety manager signs a record off, once.
CREATE TABLE maintenance_signoffs (
    record_id     bigint PRIMARY KEY REFERENCES maintenance_records (id),
    user_unit_id  bigint NOT NULL REFERENCES user_units (id),
    signed_by     text NOT NULL CHECK (signed_by <> ''),
    signed_at     timestamptz NOT NULL
);

-- Rule M3: what the telemetry says about a record. A record may be judged again (evidence can
-- arrive late through store-and-forward); the latest verdict is the one in force.
CREATE TABLE maintenance_verdicts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_id       bigint NOT NULL REFERENCES maintenance_records (id),
    device_id       topic_id NOT NULL REFERENCES devices (id),
    verdict         text NOT NULL CHECK (verdict IN ('verified', 'no_evidence', 'too_short',
                        'no_car_top_or_pit', 'duplicate_visit', 'outside_window')),
    -- the inspection-mode time inside the claimed window that the verdict rests on
    onsite          tstzrange,
    onsite_minutes  double precision NOT NULL DEFAULT 0,
    evidence        jsonb NOT NULL,
    rule_values     jsonb NOT NULL,
    decided_at      timestamptz NOT NULL,
    CHECK (verdict <> 'verified' OR onsite IS NOT NULL)
);
CREATE INDEX maintenance_verdicts_record_idx ON maintenance_verdicts (record_id, id DESC);
CREATE INDEX maintenance_verdicts_onsite_idx ON maintenance_verdicts USING gist (device_id, onsite)
    WHERE verdict = 'verified';

-- Rules M1, M2: when each tier was last reset by a verified visit (derived from verdicts, kept
-- per device so that the sweep reads one row per elevator).
CREATE TABLE maintenance_clocks (
    device_id        topic_id PRIMARY KEY REFERENCES devices (id),
    half_monthly_at  timestamptz,
    quarterly_at     timestamptz,
    semi_annual_at   timestamptz,
    annual_at        timestamptz,
    updated_at       timestamptz NOT NULL
);

-- Rules M5, M6: the self-monitoring escalation state of each elevator.
CREATE TABLE maintenance_escalations (
    device_id           topic_id PRIMARY KEY REFERENCES devices (id),
    state               text NOT NULL CHECK (state IN ('ok', 'due_soon', 'overdue',
                            'lockout_pending', 'lockout_recommended', 'locked_out',
                            'overridden')),
    previous_state      text,
    since               timestamptz NOT NULL,
    overdue_since       timestamptz,
    alarm_at            timestamptz,
    lockout_command_id  topic_id REFERENCES commands (id),
    lockout_issued_at   timestamptz,
    release_command_id  topic_id REFERENCES commands (id),
    -- the rule values and tiers behind the latest transition (also in the compliance log)
    detail              jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX maintenance_escalations_state_idx ON maintenance_escalations (state)
    WHERE state <> 'ok';

-- Commands this engine must (re)publish to the broker: the outbox of lockout/release.
CREATE TABLE compliance_outbox (
    command_id        topic_id PRIMARY KEY REFERENCES commands (id),
    next_publish_at   timestamptz NOT NULL,
    -- lockouts are re-sent every retry interval until applied; releases are sent once
    repeat_minutes    integer CHECK (repeat_minutes > 0),
    published_count   integer NOT NULL DEFAULT 0,
    last_published_at timestamptz,
    done              boolean NOT NULL DEFAULT false
);
CREATE INDEX compliance_outbox_due_idx ON compliance_outbox (next_publish_at) WHERE NOT done;

-- Rule M8: rescue drills held.
CREATE TABLE rescue_drills (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id      topic_id NOT NULL REFERENCES devices (id),
    held_at        timestamptz NOT NULL,
    technician_id  bigint REFERENCES technicians (id),
    notes          text NOT NULL DEFAULT '',
    recorded_by    text NOT NULL,
    recorded_at    timestamptz NOT NULL
);
CREATE INDEX rescue_drills_device_idx ON rescue_drills (device_id, held_at);

-- Flags raised by rules M8-M11 (and M3/M9 on records): open until resolved.
CREATE TABLE compliance_findings (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule          text NOT NULL CHECK (rule ~ '^[A-Z][0-9]{1,2}$'),
    kind          text NOT NULL,
    subject_type  text NOT NULL,
    subject_id    text NOT NULL,
    opened_at     timestamptz NOT NULL,
    closed_at     timestamptz,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb,
    CHECK (closed_at IS NULL OR closed_at >= opened_at)
);
CREATE UNIQUE INDEX compliance_findings_open_idx
    ON compliance_findings (rule, kind, subject_type, subject_id) WHERE closed_at IS NULL;

-- Records, sign-offs, verdicts and drills are never edited or deleted (rule M4, A3).
CREATE TRIGGER maintenance_records_no_update BEFORE UPDATE OR DELETE ON maintenance_records
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();
CREATE TRIGGER maintenance_records_no_truncate BEFORE TRUNCATE ON maintenance_records
    FOR EACH STATEMENT EXECUTE FUNCTION compliance_log_refuse_change();
CREATE TRIGGER maintenance_signoffs_no_update BEFORE UPDATE OR DELETE ON maintenance_signoffs
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();
CREATE TRIGGER maintenance_verdicts_no_update BEFORE UPDATE OR DELETE ON maintenance_verdicts
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();
CREATE TRIGGER rescue_drills_no_update BEFORE UPDATE OR DELETE ON rescue_drills
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();

-- The verdict in force for each record: its latest.
CREATE VIEW maintenance_current_verdicts AS
    SELECT DISTINCT ON (record_id) *
    FROM maintenance_verdicts
    ORDER BY record_id, id DESC;

-- Verified visits that count (rules M1-M3): the record is not superseded by a correction, its
-- verdict in force is verified, and its checklist completes at least one tier.
CREATE VIEW maintenance_credits AS
    SELECT r.device_id, r.id AS record_id,
           CASE r.credited_tier WHEN 'half_monthly' THEN 1 WHEN 'quarterly' THEN 2
                                WHEN 'semi_annual' THEN 3 WHEN 'annual' THEN 4 END AS rank,
           upper(v.onsite) AS visited_at
    FROM maintenance_records r
    JOIN maintenance_current_verdicts v ON v.record_id = r.id
    WHERE v.verdict = 'verified'
      AND r.credited_tier IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM maintenance_records c WHERE c.corrects_id = r.id);

-- Rule M1: the first instant a tier is overdue. Day 0 is the local date of the last verified
-- visit; day N (the interval) is still on time; day N + 1 starts overdue, at local midnight.
CREATE FUNCTION compliance_overdue_since(last_visit timestamptz, tz text, days integer)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT (((last_visit AT TIME ZONE tz)::date + days + 1)::timestamp) AT TIME ZONE tz
$$;
