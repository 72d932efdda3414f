-- Rule A1: a Merkle tree over the compliance log (RFC 6962 / 9162), so that a regulator can
-- verify any part of the log offline from signed tree heads, inclusion and consistency proofs.
--
-- Each entry's leaf hash (SHA-256 of 0x00 || its canonical bytes) is recorded, append-only, by
-- the checkpoint that first covers it, after that checkpoint checked the entry against the
-- chain. Every checkpoint from now on is a signed tree head: tree size, Merkle root, and the
-- chain's head hash. The stored leaves that hash up to a signed root are authenticated by it,
-- so an entry edited later (even with the chain's hashes recomputed) is named exactly.
CREATE TABLE compliance_log_leaves (
    seq        bigint PRIMARY KEY,  -- no foreign key: TRUNCATE of the log must meet its trigger
    leaf_hash  text NOT NULL CHECK (leaf_hash ~ '^[0-9a-f]{64}$')
);
CREATE TRIGGER compliance_log_leaves_no_update BEFORE UPDATE OR DELETE ON compliance_log_leaves
    FOR EACH ROW EXECUTE FUNCTION compliance_log_refuse_change();
CREATE TRIGGER compliance_log_leaves_no_truncate BEFORE TRUNCATE ON compliance_log_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION compliance_log_refuse_change();

-- version 1: entry count and chain head signed (before this migration); version 2: a signed
-- tree head (root_hash over the first entry_count entries).
ALTER TABLE compliance_checkpoints
    ADD COLUMN version    smallint NOT NULL DEFAULT 1 CHECK (version IN (1, 2)),
    ADD COLUMN root_hash  text CHECK (root_hash ~ '^[0-9a-f]{64}$'),
    ADD CONSTRAINT compliance_checkpoints_v2_root CHECK ((version = 2) = (root_hash IS NOT NULL));
