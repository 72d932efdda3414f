-- A dead letter keeps the first 64 KiB of an oversize payload and its full size, not megabytes
-- per copy (NULL for letters stored before this column).
ALTER TABLE dead_letters ADD COLUMN payload_size integer CHECK (payload_size >= 0);
