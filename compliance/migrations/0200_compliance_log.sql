-- Compliance log (rule A1): an append-only, hash-chained record of every compliance fact, and
-- signed checkpoints of its head. The database itself refuses UPDATE, DELETE and TRUNCATE; the
-- insert trigger refuses any row that does not extend the current head, so the chain never forks.
-- The canonical form that each hash covers is documented in docs/compliance.md.

CREATE TABLE compliance_log (
    seq           bigint PRIMARY KEY CHECK (seq >= 1),
    kind          text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,63}$'),
    subject_type  text NOT NULL CHECK (subject_type ~ '^[a-z][a-z0-9_]{0,63}$'),
    subject_id    text NOT NULL,
    -- canonical JSON text of the body (exactly what the hash covers); cast to jsonb to query
    body          text NOT NULL CHECK (left(body, 1) = '{'),
    actor         text NOT NULL CHECK (actor <> ''),
    at            timestamptz NOT NULL,
    prev_hash     text NOT NULL UNIQUE CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash          text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX compliance_log_subject_idx ON compliance_log (subject_type, subject_id, seq);
CREATE INDEX compliance_log_kind_idx ON compliance_log (kind, seq);

CREATE FUNCTION compliance_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- A new entry must extend the head: next sequence number, previous hash = head hash.
CREATE FUNCTION compliance_log_check_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_seq   bigint;
    head_hash  text;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM compliance_log ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := repeat('0', 64);
    END IF;
    IF NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'compliance log entry % does not extend the head (entry %)',
            NEW.seq, head_seq USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER compliance_log_link BEFORE INSERT ON compliance_log
    FOR EACH ROW EXECUTE FUNCTION compliance_log_check_link();
CREATE TRIGGER compliance_log_no_update BEFORE UPDATE OR DELETE ON compliance_log
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();
CREATE TRIGGER compliance_log_no_truncate BEFORE TRUNCATE ON compliance_log
    FOR EACH STATEMENT EXECUTE FUNCTION compliance_log_refuse_change();

-- Signed checkpoints: entry count and head hash, signed with the engine's Ed25519 key.
CREATE TABLE compliance_checkpoints (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_count  bigint NOT NULL CHECK (entry_count >= 0),
    head_hash    text NOT NULL CHECK (head_hash ~ '^[0-9a-f]{64}$'),
    signed_at    timestamptz NOT NULL,
    public_key   text NOT NULL CHECK (public_key ~ '^[0-9a-f]{64}$'),
    signature    text NOT NULL CHECK (signature ~ '^[0-9a-f]{128}$')
);
CREATE INDEX compliance_checkpoints_count_idx ON compliance_checkpoints (entry_count);

CREATE TRIGGER compliance_checkpoints_no_update BEFORE UPDATE OR DELETE ON compliance_checkpoints
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();
CREATE TRIGGER compliance_checkpoints_no_truncate BEFORE TRUNCATE ON compliance_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION compliance_log_refuse_change();
