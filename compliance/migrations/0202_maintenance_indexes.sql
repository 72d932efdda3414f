-- Records saved before their claimed end are judged by a later sweep; this finds them fast.
CREATE INDEX maintenance_records_early_idx ON maintenance_records (claimed_end)
    WHERE claimed_end > recorded_at;
