-- Alerts: alarms and their history, escalation policies (rule S2), contacts, the outbox of
-- deliveries with every attempt, and on-call rosters (rule R3).
--
-- The lifecycle lives in SQL functions (alerts_raise, alerts_acknowledge, alerts_clear,
-- alerts_fire_due) so that one round trip does the whole change, inside the caller's
-- transaction, from synchronous and asynchronous callers alike. Each change is announced on the
-- vigil_alerts channel; PostgreSQL delivers the notice when the caller commits.

CREATE DOMAIN alarm_audience AS text CHECK (VALUE IN (
    'firm', 'duty_manager', 'firm_manager', 'technician', 'user_unit', 'property_management',
    'manufacturer', 'regulator', 'fire_service', 'platform'));

CREATE TABLE escalation_policies (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Ordered levels; each fires once per escalation run, ``after_s`` after the run started.
CREATE TABLE escalation_levels (
    policy_id  bigint NOT NULL REFERENCES escalation_policies (id) ON DELETE CASCADE,
    level      integer NOT NULL CHECK (level >= 1),
    after_s    integer NOT NULL CHECK (after_s >= 0),
    audience   alarm_audience[] NOT NULL CHECK (cardinality(audience) > 0),
    PRIMARY KEY (policy_id, level)
);

-- Which policy an alarm type follows when the caller names none.
CREATE TABLE alarm_routes (
    alarm_type  text PRIMARY KEY,
    policy_id   bigint NOT NULL REFERENCES escalation_policies (id) ON DELETE CASCADE
);

CREATE TABLE alarms (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_type            text NOT NULL CHECK (source_type ~ '^[a-z][a-z0-9_]{0,63}$'),
    source_id              text NOT NULL CHECK (source_id <> ''),
    type                   text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_.]{0,63}$'),
    severity               text NOT NULL CHECK (severity IN ('info', 'warning', 'major', 'critical')),
    message                text NOT NULL,
    audience               alarm_audience[] NOT NULL CHECK (cardinality(audience) > 0),
    details                jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object'),
    state                  text NOT NULL DEFAULT 'active'
                           CHECK (state IN ('active', 'acknowledged', 'cleared')),
    policy_id              bigint REFERENCES escalation_policies (id),
    raised_at              timestamptz NOT NULL,
    last_triggered_at      timestamptz NOT NULL,
    trigger_count          integer NOT NULL DEFAULT 1 CHECK (trigger_count >= 1),
    -- rule S2: a re-trigger starts a new run of the policy; each level fires once per run
    escalation_run         integer NOT NULL DEFAULT 1 CHECK (escalation_run >= 1),
    escalation_started_at  timestamptz NOT NULL,
    acknowledged_at        timestamptz,
    acknowledged_by        text,
    cleared_at             timestamptz,
    cleared_by             text,
    CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL)),
    CHECK ((cleared_at IS NULL) = (cleared_by IS NULL)),
    CHECK ((state = 'cleared') = (cleared_at IS NOT NULL)),
    CHECK (state <> 'acknowledged' OR acknowledged_at IS NOT NULL)
);
-- One open (active or acknowledged) alarm per source and type.
CREATE UNIQUE INDEX alarms_one_open_idx ON alarms (source_type, source_id, type)
    WHERE state <> 'cleared';
CREATE INDEX alarms_state_idx ON alarms (state, raised_at);
CREATE INDEX alarms_source_idx ON alarms (source_type, source_id);

-- Every change of every alarm, in order; never updated.
CREATE TABLE alarm_changes (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alarm_id  bigint NOT NULL REFERENCES alarms (id),
    change    text NOT NULL
              CHECK (change IN ('raised', 'retriggered', 'acknowledged', 'cleared', 'escalated')),
    at        timestamptz NOT NULL,
    actor     text NOT NULL CHECK (actor <> ''),
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX alarm_changes_alarm_idx ON alarm_changes (alarm_id, id);

-- rule S2: the primary key makes a level fire at most once per run, across processes.
CREATE TABLE escalation_firings (
    alarm_id  bigint NOT NULL REFERENCES alarms (id),
    run       integer NOT NULL,
    level     integer NOT NULL,
    fired_at  timestamptz NOT NULL,
    PRIMARY KEY (alarm_id, run, level)
);

-- Where a party wants to hear about an audience: a firm's duty line, its duty manager, a user
-- unit's safety manager, a technician's phone app, a jurisdiction's fire service, ...
CREATE TABLE contacts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    party_type  text NOT NULL CHECK (party_type IN (
                    'firm', 'user_unit', 'manufacturer', 'technician', 'jurisdiction', 'platform')),
    party_id    bigint,
    audience    alarm_audience NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('webhook', 'email', 'mqtt', 'console')),
    address     text NOT NULL CHECK (address <> ''),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((party_type = 'platform') = (party_id IS NULL))
);
CREATE UNIQUE INDEX contacts_unique_idx
    ON contacts (party_type, coalesce(party_id, 0), audience, channel, address);

-- The outbox: one row per message to one address; the delivery worker sends it after commit.
CREATE TABLE deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alarm_id         bigint REFERENCES alarms (id),
    subject_type     text NOT NULL,
    subject_id       text NOT NULL,
    reason           text NOT NULL,
    audience         alarm_audience NOT NULL,
    contact_id       bigint REFERENCES contacts (id),
    channel          text NOT NULL CHECK (channel IN ('webhook', 'email', 'mqtt', 'console')),
    address          text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at       timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    finished_at      timestamptz,
    last_error       text NOT NULL DEFAULT '',
    CHECK ((status = 'pending') = (finished_at IS NULL))
);
CREATE INDEX deliveries_pending_idx ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_alarm_idx ON deliveries (alarm_id);
CREATE INDEX deliveries_subject_idx ON deliveries (subject_type, subject_id);

-- The delivery log: every attempt, successful or not.
CREATE TABLE delivery_attempts (
    delivery_id  bigint NOT NULL REFERENCES deliveries (id),
    attempt      integer NOT NULL CHECK (attempt >= 1),
    at           timestamptz NOT NULL,
    ok           boolean NOT NULL,
    detail       text NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, attempt)
);

-- rule R3: on-call rosters. A shift puts one technician of the roster's firm on call.
CREATE TABLE rosters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    firm_id     bigint NOT NULL REFERENCES maintenance_firms (id),
    name        text NOT NULL CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (firm_id, name),
    UNIQUE (id, firm_id)
);

CREATE TABLE roster_shifts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    roster_id      bigint NOT NULL,
    firm_id        bigint NOT NULL,
    technician_id  bigint NOT NULL,
    during         tstzrange NOT NULL
                   CHECK (NOT isempty(during) AND NOT lower_inf(during) AND NOT upper_inf(during)),
    FOREIGN KEY (roster_id, firm_id) REFERENCES rosters (id, firm_id) ON DELETE CASCADE,
    -- a technician on call belongs to the roster's firm
    FOREIGN KEY (technician_id, firm_id) REFERENCES technicians (id, firm_id),
    EXCLUDE USING gist (roster_id WITH =, technician_id WITH =, during WITH &&)
);
CREATE INDEX roster_shifts_firm_idx ON roster_shifts USING gist (firm_id, during);

-- Never edit history.
CREATE FUNCTION alerts_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER alarm_changes_append_only BEFORE UPDATE OR DELETE ON alarm_changes
    FOR EACH ROW EXECUTE FUNCTION alerts_refuse_change();
CREATE TRIGGER delivery_attempts_append_only BEFORE UPDATE OR DELETE ON delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION alerts_refuse_change();
CREATE TRIGGER escalation_firings_append_only BEFORE UPDATE OR DELETE ON escalation_firings
    FOR EACH ROW EXECUTE FUNCTION alerts_refuse_change();

-- The parties an alarm's source reaches, per audience.
CREATE FUNCTION alerts_parties(p_source_type text, p_source_id text)
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
    ), firm AS (
        SELECT firm_id FROM device WHERE firm_id IS NOT NULL
        UNION SELECT firm_id FROM tech
        UNION SELECT f.id FROM maintenance_firms f
              WHERE p_source_type = 'firm' AND f.id::text = p_source_id
    ), unit AS (
        SELECT user_unit_id FROM device UNION SELECT user_unit_id FROM site
    ), juris AS (
        SELECT jurisdiction_id FROM device UNION SELECT jurisdiction_id FROM site
    )
    SELECT a, 'firm', firm_id FROM firm, unnest(ARRAY['firm', 'duty_manager', 'firm_manager']) a
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

-- Queue one delivery per active contact of the given audiences of an alarm's source.
CREATE FUNCTION alerts_enqueue(
    p_alarm alarms, p_reason text, p_audience text[], p_at timestamptz
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    queued integer;
BEGIN
    INSERT INTO deliveries (alarm_id, subject_type, subject_id, reason, audience, contact_id,
                            channel, address, payload, created_at, next_attempt_at)
    SELECT p_alarm.id, p_alarm.source_type, p_alarm.source_id, p_reason, c.audience, c.id,
           c.channel, c.address,
           jsonb_build_object(
               'kind', 'alarm', 'reason', p_reason, 'alarm_id', p_alarm.id,
               'type', p_alarm.type, 'severity', p_alarm.severity, 'state', p_alarm.state,
               'source_type', p_alarm.source_type, 'source_id', p_alarm.source_id,
               'message', p_alarm.message, 'audience', c.audience, 'details', p_alarm.details,
               'raised_at', p_alarm.raised_at, 'at', p_at),
           p_at, p_at
    FROM alerts_parties(p_alarm.source_type, p_alarm.source_id) p
    JOIN contacts c ON c.audience = p.audience AND c.party_type = p.party_type
                   AND c.party_id IS NOT DISTINCT FROM p.party_id AND c.active
    WHERE p.audience = ANY (p_audience);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM pg_notify('vigil_alerts', json_build_object('kind', 'deliveries',
                                                           'alarm_id', p_alarm.id)::text);
    END IF;
    RETURN queued;
END
$$;

CREATE FUNCTION alerts_announce(p_alarm alarms, p_change text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('vigil_alerts', json_build_object(
        'kind', 'alarm', 'change', p_change, 'id', p_alarm.id, 'state', p_alarm.state,
        'type', p_alarm.type, 'severity', p_alarm.severity, 'source_type', p_alarm.source_type,
        'source_id', p_alarm.source_id)::text)
$$;

-- Raise an alarm, or re-trigger the open one of the same source and type.
CREATE FUNCTION alerts_raise(
    p_source_type text, p_source_id text, p_type text, p_severity text, p_message text,
    p_audience text[], p_details jsonb, p_at timestamptz, p_actor text, p_policy text
) RETURNS alarms LANGUAGE plpgsql AS $$
DECLARE
    policy bigint;
    was text;
    result alarms;
BEGIN
    IF p_policy IS NOT NULL THEN
        SELECT id INTO policy FROM escalation_policies WHERE name = p_policy;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown escalation policy %', p_policy
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    ELSE
        SELECT policy_id INTO policy FROM alarm_routes WHERE alarm_type = p_type;
    END IF;
    -- Lock the open alarm, if any, so that concurrent raises serialise on it.
    SELECT state INTO was FROM alarms
    WHERE source_type = p_source_type AND source_id = p_source_id AND type = p_type
      AND state <> 'cleared'
    FOR UPDATE;
    INSERT INTO alarms AS a (source_type, source_id, type, severity, message, audience, details,
                             policy_id, raised_at, last_triggered_at, escalation_started_at)
    VALUES (p_source_type, p_source_id, p_type, p_severity, p_message, p_audience::alarm_audience[],
            coalesce(p_details, '{}'::jsonb), policy, p_at, p_at, p_at)
    ON CONFLICT (source_type, source_id, type) WHERE state <> 'cleared' DO UPDATE SET
        trigger_count = a.trigger_count + 1,
        last_triggered_at = greatest(a.last_triggered_at, EXCLUDED.last_triggered_at),
        -- a re-trigger needs attention again and restarts the escalation policy (rule S2)
        state = 'active',
        escalation_run = a.escalation_run + 1,
        escalation_started_at = greatest(a.escalation_started_at, EXCLUDED.escalation_started_at),
        message = EXCLUDED.message,
        details = a.details || EXCLUDED.details
    RETURNING * INTO result;
    -- a fresh row has been triggered once; a raise that lost a race to another updates it
    IF result.trigger_count = 1 THEN
        INSERT INTO alarm_changes (alarm_id, change, at, actor, detail)
        VALUES (result.id, 'raised', p_at, p_actor,
                jsonb_build_object('severity', p_severity, 'audience', p_audience));
        PERFORM alerts_enqueue(result, 'raised', p_audience, p_at);
        PERFORM alerts_announce(result, 'raised');
    ELSE
        INSERT INTO alarm_changes (alarm_id, change, at, actor, detail)
        VALUES (result.id, 'retriggered', p_at, p_actor,
                jsonb_build_object('trigger_count', result.trigger_count,
                                   'was', coalesce(was, 'active')));
        IF was = 'acknowledged' THEN
            PERFORM alerts_enqueue(result, 'retriggered', p_audience, p_at);
        END IF;
        PERFORM alerts_announce(result, 'retriggered');
    END IF;
    RETURN result;
END
$$;

-- Acknowledge an active alarm (stops its escalation); returns the alarm as it now stands.
CREATE FUNCTION alerts_acknowledge(p_alarm_id bigint, p_by text, p_at timestamptz)
RETURNS alarms LANGUAGE plpgsql AS $$
DECLARE
    result alarms;
BEGIN
    UPDATE alarms SET state = 'acknowledged', acknowledged_at = p_at, acknowledged_by = p_by
    WHERE id = p_alarm_id AND state = 'active'
    RETURNING * INTO result;
    IF FOUND THEN
        INSERT INTO alarm_changes (alarm_id, change, at, actor)
        VALUES (result.id, 'acknowledged', p_at, p_by);
        PERFORM alerts_announce(result, 'acknowledged');
        RETURN result;
    END IF;
    SELECT * INTO result FROM alarms WHERE id = p_alarm_id;
    RETURN result;
END
$$;

-- Clear an open alarm; returns the alarm as it now stands.
CREATE FUNCTION alerts_clear(p_alarm_id bigint, p_by text, p_at timestamptz, p_reason text)
RETURNS alarms LANGUAGE plpgsql AS $$
DECLARE
    result alarms;
BEGIN
    UPDATE alarms SET state = 'cleared', cleared_at = p_at, cleared_by = p_by
    WHERE id = p_alarm_id AND state <> 'cleared'
    RETURNING * INTO result;
    IF FOUND THEN
        INSERT INTO alarm_changes (alarm_id, change, at, actor, detail)
        VALUES (result.id, 'cleared', p_at, p_by, jsonb_build_object('reason', p_reason));
        PERFORM alerts_announce(result, 'cleared');
        RETURN result;
    END IF;
    SELECT * INTO result FROM alarms WHERE id = p_alarm_id;
    RETURN result;
END
$$;

-- Fire every escalation level now due on an active alarm; each fires once per run (rule S2).
CREATE FUNCTION alerts_fire_due(p_now timestamptz)
RETURNS TABLE (alarm_id bigint, run integer, level integer) LANGUAGE plpgsql AS $$
DECLARE
    due record;
    fired alarms;
BEGIN
    FOR due IN
        SELECT a.id, a.escalation_run, l.level, l.audience
        FROM alarms a
        JOIN escalation_levels l ON l.policy_id = a.policy_id
        WHERE a.state = 'active'
          AND a.escalation_started_at + make_interval(secs => l.after_s) <= p_now
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
                                   'audience', due.audience));
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

-- When the next escalation level of any active alarm falls due (NULL when none will).
CREATE FUNCTION alerts_next_escalation() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT min(a.escalation_started_at + make_interval(secs => l.after_s))
    FROM alarms a
    JOIN escalation_levels l ON l.policy_id = a.policy_id
    WHERE a.state = 'active'
      AND NOT EXISTS (SELECT 1 FROM escalation_firings f
                      WHERE f.alarm_id = a.id AND f.run = a.escalation_run AND f.level = l.level)
$$;
