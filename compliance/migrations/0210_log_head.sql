-- Rule A1 at scale: the insert trigger found the log's head with
-- `SELECT seq, hash FROM compliance_log ORDER BY seq DESC LIMIT 1` once per entry: 2.19 ms an
-- entry at 100,000 lifts, 5.49 ms at 300,000, and a session that planned it while the log was
-- small kept a scan-and-sort plan that grew with the log. The head now lives in a one-row table
-- the trigger reads and moves: the same cost at 10 entries and at 100 million.
CREATE TABLE compliance_log_head (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq   bigint NOT NULL CHECK (seq >= 0),
    hash  text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);
INSERT INTO compliance_log_head (seq, hash)
SELECT coalesce((SELECT seq FROM compliance_log ORDER BY seq DESC LIMIT 1), 0),
       coalesce((SELECT hash FROM compliance_log ORDER BY seq DESC LIMIT 1), repeat('0', 64));

-- The trigger runs with the owner's rights: the application role reads the head and never
-- writes it (vigil.db.roles), so only an entry that extends the chain moves it.
CREATE OR REPLACE FUNCTION compliance_log_check_link() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    head_seq   bigint;
    head_hash  text;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM compliance_log_head FOR UPDATE;
    IF NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'compliance log entry % does not extend the head (entry %)',
            NEW.seq, head_seq USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    UPDATE compliance_log_head SET seq = NEW.seq, hash = NEW.hash;
    RETURN NEW;
END
$$;
