-- Rule A3: records are kept at least their retention period (maintenance 4 years, other service
-- records 3 years), then the retention purge may delete them. Nothing is ever updated, and
-- nothing is deleted but by the purge, whose transaction sets vigil.retention_purge. The
-- compliance log and its checkpoints are never deleted: they stay the proof of what was.
CREATE FUNCTION retention_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('vigil.retention_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER maintenance_records_no_update ON maintenance_records;
CREATE TRIGGER maintenance_records_no_update BEFORE UPDATE OR DELETE ON maintenance_records
    FOR EACH ROW EXECUTE FUNCTION retention_guard();
DROP TRIGGER maintenance_signoffs_no_update ON maintenance_signoffs;
CREATE TRIGGER maintenance_signoffs_no_update BEFORE UPDATE OR DELETE ON maintenance_signoffs
    FOR EACH ROW EXECUTE FUNCTION retention_guard();
DROP TRIGGER maintenance_verdicts_no_update ON maintenance_verdicts;
CREATE TRIGGER maintenance_verdicts_no_update BEFORE UPDATE OR DELETE ON maintenance_verdicts
    FOR EACH ROW EXECUTE FUNCTION retention_guard();
