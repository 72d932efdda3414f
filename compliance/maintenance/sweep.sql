-- Rules M1, M2, M5, M6: due clocks and escalation of every elevator, set-based, in one statement.
-- Parameters: now; devices (text[], or NULL for every elevator); shard and shards (the share of
-- the sites this sweep covers: shard = hash of the site mod shards; shards = 1 for all). The
-- policy placeholder below is replaced by the SELECT of compliance.maintenance.service.policy_sql().
-- Every elevator examined gets its next_check_at: when time alone can next move its state (NULL:
-- never, only a change can), so that an incremental sweep looks only at the elevators due then
-- (and those queued in maintenance_recheck).
WITH pol AS (
    {{policy}}
),
due AS (
    -- Rule M1: day 0 is the local date of the last verified visit; day N (the interval) is the
    -- last day on time. A tier never verified counts from the elevator's registration.
    SELECT p.*,
           e.state AS old_state, e.alarm_at AS old_alarm_at, e.since AS old_since,
           e.lockout_command_id AS old_lockout_command_id,
           e.lockout_issued_at AS old_lockout_issued_at,
           e.next_check_at AS old_next_check_at,
           ARRAY(SELECT jsonb_array_elements_text(coalesce(e.detail -> 'overdue_tiers',
                                                           '[]'::jsonb))) AS old_tiers,
           coalesce(k.half_monthly_on, (p.registered_at AT TIME ZONE p.tz)::date)
               + p.half_monthly_days AS half_monthly_due,
           coalesce(k.quarterly_on, (p.registered_at AT TIME ZONE p.tz)::date)
               + p.quarterly_days AS quarterly_due,
           coalesce(k.semi_annual_on, (p.registered_at AT TIME ZONE p.tz)::date)
               + p.semi_annual_days AS semi_annual_due,
           coalesce(k.annual_on, (p.registered_at AT TIME ZONE p.tz)::date)
               + p.annual_days AS annual_due
    FROM pol p
    LEFT JOIN maintenance_clocks k ON k.device_id = p.device_id
    LEFT JOIN maintenance_escalations e ON e.device_id = p.device_id
    WHERE (%(devices)s::text[] IS NULL OR p.device_id = ANY(%(devices)s::text[]))
      AND (%(shards)s::int = 1
           OR {{shard_of_site}} = %(shard)s::int)
),
clocked AS (
    SELECT d.*, least(half_monthly_due, quarterly_due, semi_annual_due, annual_due) AS due_on,
           array_remove(ARRAY[
               CASE WHEN half_monthly_due < local_today THEN 'half_monthly' END,
               CASE WHEN quarterly_due < local_today THEN 'quarterly' END,
               CASE WHEN semi_annual_due < local_today THEN 'semi_annual' END,
               CASE WHEN annual_due < local_today THEN 'annual' END], NULL) AS tiers
    FROM due d
),
judged AS (
    SELECT c.*,
           -- rule M6: a lockout ends only with a verified visit judged since the lapse was
           -- alarmed (or an authorised override); a policy edit alone never releases it
           (c.old_state IS NULL
            OR c.old_state NOT IN ('lockout_pending', 'locked_out', 'lockout_recommended')
            OR EXISTS (SELECT 1 FROM maintenance_verdicts v
                       WHERE v.device_id = c.device_id AND v.verdict = 'verified'
                         AND v.decided_at >= c.old_alarm_at)) AS release_allowed
    FROM clocked c
),
decided AS (
    SELECT c.*,
           CASE
               -- a verified visit (or a new contract's clock) makes the elevator current again
               WHEN c.local_today <= c.due_on AND c.release_allowed THEN
                   CASE WHEN c.local_today <= c.due_on - c.due_soon_days THEN 'ok'
                        ELSE 'due_soon' END
               -- rule M6: an override lapses after its hours; the lockout then resumes
               WHEN c.old_state = 'overridden' THEN
                   CASE WHEN %(now)s < c.old_since + make_interval(hours => c.override_hours)
                            THEN 'overridden'
                        WHEN c.lockout_mode = 'enforce'
                             AND maintenance_car_is_safe(c.device_id) IS NOT NULL
                            THEN 'lockout_pending'
                        ELSE 'lockout_recommended' END
               WHEN c.old_state IS NULL OR c.old_state IN ('ok', 'due_soon') THEN 'overdue'
               -- rule M6: enforce only where the platform can see that the car is safe to stop
               WHEN c.old_state = 'overdue'
                    AND %(now)s >= c.old_alarm_at + make_interval(hours => c.grace_hours)
                   THEN CASE WHEN c.lockout_mode = 'enforce'
                                  AND maintenance_car_is_safe(c.device_id) IS NOT NULL
                                 THEN 'lockout_pending'
                             ELSE 'lockout_recommended' END
               WHEN c.old_state = 'lockout_recommended' AND c.lockout_mode = 'enforce'
                    AND maintenance_car_is_safe(c.device_id) IS NOT NULL
                   THEN 'lockout_pending'
               -- rule M6: locked out once the controller applied it AND the platform's own
               -- latest state shows an idle, empty car at a landing with its doors open
               WHEN c.old_state = 'lockout_pending' AND (
                        EXISTS (SELECT 1 FROM command_results r
                                WHERE r.command_id = c.old_lockout_command_id
                                  AND r.outcome = 'done')
                        OR coalesce((SELECT ev.value = 2 FROM events ev
                                     WHERE ev.device_id = c.device_id
                                       AND ev.metric = 'lockout_state'
                                       AND ev.ts >= c.old_lockout_issued_at
                                                    - interval '5 minutes'
                                     ORDER BY ev.ts DESC LIMIT 1), false))
                    AND coalesce(maintenance_car_is_safe(c.device_id), false)
                   THEN 'locked_out'
               ELSE c.old_state
           END AS new_state
    FROM judged c
),
changed AS (
    SELECT d.*,
           ARRAY(SELECT t FROM unnest(d.tiers) t WHERE t <> ALL(d.old_tiers)) AS added_tiers,
           CASE WHEN d.new_state IN ('ok', 'due_soon') THEN NULL
                WHEN d.new_state = 'overdue' AND d.old_state IS DISTINCT FROM 'overdue'
                    THEN %(now)s
                ELSE d.old_alarm_at END AS new_alarm_at
    FROM decided d
),
timed AS (
    SELECT c.*,
           (c.new_state IS DISTINCT FROM c.old_state
            -- rule M5: a further tier falling overdue while the lift is already overdue
            OR (c.new_state NOT IN ('ok', 'due_soon') AND cardinality(c.added_tiers) > 0))
               AS is_transition,
           CASE
               -- rule M6: these wait on the car and the controller, not on the calendar (a
               -- lockout only recommended by the policy waits on a visit or a policy change,
               -- which queue it, and on its further tiers, below)
               WHEN c.new_state = 'lockout_pending'
                    OR (c.new_state = 'lockout_recommended' AND c.lockout_mode = 'enforce')
                   THEN %(now)s
               ELSE least(
                   -- ok -> due_soon, due_soon -> overdue: the first local midnight past
                   CASE WHEN c.new_state = 'ok'
                        THEN (c.due_on - c.due_soon_days + 1)::timestamp AT TIME ZONE c.tz END,
                   CASE WHEN c.new_state IN ('ok', 'due_soon')
                        THEN (c.due_on + 1)::timestamp AT TIME ZONE c.tz END,
                   -- rule M5: a further tier falling overdue (least() skips the NULLs)
                   CASE WHEN c.new_state NOT IN ('ok', 'due_soon') THEN least(
                       CASE WHEN c.half_monthly_due >= c.local_today
                            THEN (c.half_monthly_due + 1)::timestamp AT TIME ZONE c.tz END,
                       CASE WHEN c.quarterly_due >= c.local_today
                            THEN (c.quarterly_due + 1)::timestamp AT TIME ZONE c.tz END,
                       CASE WHEN c.semi_annual_due >= c.local_today
                            THEN (c.semi_annual_due + 1)::timestamp AT TIME ZONE c.tz END,
                       CASE WHEN c.annual_due >= c.local_today
                            THEN (c.annual_due + 1)::timestamp AT TIME ZONE c.tz END) END,
                   -- rule M6: the grace period after the alarm, an override's hours
                   CASE WHEN c.new_state = 'overdue'
                        THEN c.new_alarm_at + make_interval(hours => c.grace_hours) END,
                   CASE WHEN c.new_state = 'overridden'
                        THEN c.old_since + make_interval(hours => c.override_hours) END)
           END AS next_check_at
    FROM changed c
),
upserted AS (
INSERT INTO maintenance_escalations AS e
    (device_id, state, previous_state, since, overdue_since, alarm_at, lockout_command_id,
     lockout_issued_at, next_check_at, site_id, detail)
SELECT device_id, new_state, old_state, %(now)s, (due_on + 1)::timestamp AT TIME ZONE tz,
       new_alarm_at, old_lockout_command_id, old_lockout_issued_at, next_check_at, site_id,
       jsonb_build_object(
           'overdue_since', (due_on + 1)::timestamp AT TIME ZONE tz,
           'overdue_tiers', to_jsonb(tiers),
           'newly_overdue_tiers', to_jsonb(CASE WHEN new_state IN ('ok', 'due_soon')
                                                THEN ARRAY[]::text[] ELSE added_tiers END),
           'tier_last_day_on_time', jsonb_build_object(
               'half_monthly', half_monthly_due, 'quarterly', quarterly_due,
               'semi_annual', semi_annual_due, 'annual', annual_due),
           'alarm_at', new_alarm_at,
           'reason', CASE
               WHEN old_state = 'overridden' AND new_state IN ('lockout_pending',
                                                               'lockout_recommended')
                   THEN 'override expired'
               WHEN new_state = 'lockout_recommended' AND lockout_mode = 'enforce'
                   THEN 'the platform cannot see whether the car is safe to lock out'
               WHEN old_state IN ('lockout_pending', 'locked_out', 'lockout_recommended')
                    AND new_state IN ('ok', 'due_soon')
                   THEN 'verified maintenance'
           END,
           'recipients', jsonb_build_object(
               'firm_id', firm_id, 'user_unit_id', user_unit_id,
               'manufacturer_id', manufacturer_id),
           'rule_values', jsonb_build_object(
               'half_monthly_days', half_monthly_days, 'quarterly_days', quarterly_days,
               'semi_annual_days', semi_annual_days, 'annual_days', annual_days,
               'due_soon_days', due_soon_days, 'grace_hours', grace_hours,
               'lockout_mode', lockout_mode, 'lockout_retry_minutes', lockout_retry_minutes,
               'override_hours', override_hours, 'timezone', tz))
FROM timed
WHERE is_transition
ON CONFLICT (device_id) DO UPDATE SET
    state = excluded.state,
    previous_state = CASE WHEN e.state = excluded.state THEN e.previous_state ELSE e.state END,
    since = CASE WHEN e.state = excluded.state THEN e.since ELSE excluded.since END,
    overdue_since = excluded.overdue_since,
    alarm_at = excluded.alarm_at,
    next_check_at = excluded.next_check_at,
    site_id = excluded.site_id,
    detail = excluded.detail
RETURNING device_id, state, detail, lockout_command_id
),
-- an elevator examined without a transition: only its timer (and its site) moves
rescheduled AS (
    UPDATE maintenance_escalations e SET next_check_at = t.next_check_at, site_id = t.site_id
    FROM timed t
    WHERE e.device_id = t.device_id AND NOT t.is_transition
      AND (e.next_check_at IS DISTINCT FROM t.next_check_at
           OR e.site_id IS DISTINCT FROM t.site_id)
),
-- each transition's state before, looked up by elevator in one object: a join of the two
-- CTEs, whose sizes the planner cannot see, became a nested loop, quadratic in a shard's
-- transitions (4,000 a shard on a day at a million lifts); materialized: computed once
before AS MATERIALIZED (
    SELECT coalesce(jsonb_object_agg(device_id, old_state), '{}') AS old_states
    FROM timed WHERE is_transition
)
-- the first sight of a current elevator only creates its row: nothing to act on or log
SELECT u.device_id, u.state, b.old_states ->> u.device_id AS previous_state, u.detail,
       u.lockout_command_id
FROM before b CROSS JOIN upserted u
WHERE NOT (b.old_states ->> u.device_id IS NULL AND u.state = 'ok')
