-- Rules M1, M2, M5, M6: due clocks and escalation of every elevator, set-based, in one statement.
-- Parameters: now, and devices (text[], or NULL for every elevator). The policy placeholder
-- below is replaced by the SELECT of compliance.maintenance.service.policy_sql().
WITH pol AS (
    {{policy}}
),
due AS (
    -- Rule M1: day 0 is the local date of the last verified visit; day N (the interval) is the
    -- last day on time. A tier never verified counts from the elevator's registration.
    SELECT p.*,
           e.state AS old_state, e.alarm_at AS old_alarm_at,
           e.lockout_command_id AS old_lockout_command_id,
           e.lockout_issued_at AS old_lockout_issued_at,
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
    WHERE %(devices)s::text[] IS NULL OR p.device_id = ANY(%(devices)s::text[])
),
clocked AS (
    SELECT d.*, least(half_monthly_due, quarterly_due, semi_annual_due, annual_due) AS due_on
    FROM due d
),
decided AS (
    SELECT c.*,
           CASE
               -- a verified visit (or a new contract's clock) makes the elevator current again
               WHEN c.local_today <= c.due_on - c.due_soon_days THEN 'ok'
               WHEN c.local_today <= c.due_on THEN 'due_soon'
               WHEN c.old_state IS NULL OR c.old_state IN ('ok', 'due_soon') THEN 'overdue'
               WHEN c.old_state = 'overdue'
                    AND %(now)s >= c.old_alarm_at + make_interval(hours => c.grace_hours)
                   THEN CASE WHEN c.lockout_mode = 'enforce' THEN 'lockout_pending'
                             ELSE 'lockout_recommended' END
               WHEN c.old_state = 'lockout_recommended' AND c.lockout_mode = 'enforce'
                   THEN 'lockout_pending'
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
                   THEN 'locked_out'
               ELSE c.old_state
           END AS new_state
    FROM clocked c
),
upserted AS (
INSERT INTO maintenance_escalations AS e
    (device_id, state, previous_state, since, overdue_since, alarm_at, lockout_command_id,
     lockout_issued_at, detail)
SELECT device_id, new_state, old_state, %(now)s, (due_on + 1)::timestamp AT TIME ZONE tz,
       CASE WHEN new_state IN ('ok', 'due_soon') THEN NULL
            WHEN new_state = 'overdue' THEN %(now)s
            ELSE old_alarm_at END,
       old_lockout_command_id, old_lockout_issued_at,
       jsonb_build_object(
           'overdue_since', (due_on + 1)::timestamp AT TIME ZONE tz,
           'overdue_tiers', to_jsonb(array_remove(ARRAY[
               CASE WHEN half_monthly_due < local_today THEN 'half_monthly' END,
               CASE WHEN quarterly_due < local_today THEN 'quarterly' END,
               CASE WHEN semi_annual_due < local_today THEN 'semi_annual' END,
               CASE WHEN annual_due < local_today THEN 'annual' END], NULL)),
           'tier_last_day_on_time', jsonb_build_object(
               'half_monthly', half_monthly_due, 'quarterly', quarterly_due,
               'semi_annual', semi_annual_due, 'annual', annual_due),
           'alarm_at', CASE WHEN new_state = 'overdue' THEN %(now)s ELSE old_alarm_at END,
           'recipients', jsonb_build_object(
               'firm_id', firm_id, 'user_unit_id', user_unit_id,
               'manufacturer_id', manufacturer_id),
           'rule_values', jsonb_build_object(
               'half_monthly_days', half_monthly_days, 'quarterly_days', quarterly_days,
               'semi_annual_days', semi_annual_days, 'annual_days', annual_days,
               'due_soon_days', due_soon_days, 'grace_hours', grace_hours,
               'lockout_mode', lockout_mode, 'lockout_retry_minutes', lockout_retry_minutes,
               'timezone', tz))
FROM decided
WHERE new_state IS DISTINCT FROM old_state
ON CONFLICT (device_id) DO UPDATE SET
    state = excluded.state,
    previous_state = e.state,
    since = excluded.since,
    overdue_since = excluded.overdue_since,
    alarm_at = excluded.alarm_at,
    detail = excluded.detail
RETURNING device_id, state, previous_state, detail, lockout_command_id
)
-- the first sight of a current elevator only creates its row: nothing to act on or log
SELECT * FROM upserted WHERE NOT (previous_state IS NULL AND state = 'ok')
