-- Rule A1 at scale: each signed tree head keeps the roots of its perfect subtrees (the tree's
-- right edge), so the next head hashes only the entries appended since, not the whole log.
-- Authenticated by the signed root they fold up to; a frontier that does not is ignored.
ALTER TABLE compliance_checkpoints ADD COLUMN frontier jsonb
    CHECK (frontier IS NULL OR jsonb_typeof(frontier) = 'array');
