-- Rule A1 at scale: the link check ran once per row and moved the one-row head each time.
-- Inside one transaction every move leaves a row version that the next read steps over, so a
-- batch of N entries cost O(N^2): a day's ~70,000 transitions at a million lifts. The check now
-- runs once per statement over the statement's new rows (in sequence order: each extends the
-- one before, the first extends the head), and the head moves once; the application inserts a
-- batch in one statement (compliance.log.service.append_many).
DROP TRIGGER compliance_log_link ON compliance_log;
DROP FUNCTION compliance_log_check_link();

CREATE FUNCTION compliance_log_check_links() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    head_seq   bigint;
    head_hash  text;
    bad_seq    bigint;
    last_seq   bigint;
    last_hash  text;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM compliance_log_head FOR UPDATE;
    SELECT n.seq INTO bad_seq
    FROM (SELECT a.seq, a.prev_hash,
                 row_number() OVER (ORDER BY a.seq) AS k,
                 lag(a.hash) OVER (ORDER BY a.seq) AS prior_hash
          FROM added a) n
    WHERE n.seq <> head_seq + n.k OR n.prev_hash <> coalesce(n.prior_hash, head_hash)
    ORDER BY n.seq
    LIMIT 1;
    IF bad_seq IS NOT NULL THEN
        RAISE EXCEPTION 'compliance log entry % does not extend the head (entry %)',
            bad_seq, head_seq USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT a.seq, a.hash INTO last_seq, last_hash FROM added a ORDER BY a.seq DESC LIMIT 1;
    IF last_seq IS NOT NULL THEN
        UPDATE compliance_log_head SET seq = last_seq, hash = last_hash;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER compliance_log_links AFTER INSERT ON compliance_log
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION compliance_log_check_links();
