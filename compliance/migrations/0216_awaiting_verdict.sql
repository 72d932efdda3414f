-- Rules M2, M3 at national scale: a record saved before its claimed end waits for its verdict
-- until the window ends. The sweep found such records through an index of every one ever saved,
-- and, misled about a shard's size, through every record of the shard's elevators (650 ms a
-- shard at 30,000 lifts, each sweep). They now wait in a queue of their own, which a verdict
-- empties: the sweep reads only what waits.
CREATE TABLE maintenance_awaiting_verdict (
    record_id    bigint PRIMARY KEY REFERENCES maintenance_records (id) ON DELETE CASCADE,
    claimed_end  timestamptz NOT NULL
);
CREATE INDEX maintenance_awaiting_verdict_end_idx ON maintenance_awaiting_verdict (claimed_end);

INSERT INTO maintenance_awaiting_verdict (record_id, claimed_end)
SELECT r.id, r.claimed_end FROM maintenance_records r
WHERE r.claimed_end > r.recorded_at
  AND NOT EXISTS (SELECT 1 FROM maintenance_verdicts v WHERE v.record_id = r.id);

CREATE FUNCTION maintenance_await_verdict() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO maintenance_awaiting_verdict (record_id, claimed_end)
    SELECT a.id, a.claimed_end FROM added a WHERE a.claimed_end > a.recorded_at;
    RETURN NULL;
END $$;

CREATE TRIGGER maintenance_records_await_verdict
    AFTER INSERT ON maintenance_records REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance_await_verdict();

CREATE FUNCTION maintenance_verdict_given() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM maintenance_awaiting_verdict w
    WHERE w.record_id IN (SELECT g.record_id FROM given g);
    RETURN NULL;
END $$;

CREATE TRIGGER maintenance_verdicts_given
    AFTER INSERT ON maintenance_verdicts REFERENCING NEW TABLE AS given
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance_verdict_given();

-- the index the sweep read before: every early record ever saved
DROP INDEX maintenance_records_early_idx;
