-- Security: read-only API keys, revocations announced, login throttling.

-- An API key never carries more than its creator's role allows: a read-only key (every key of
-- a regulator, who only reads) may only read, whatever route it calls.
ALTER TABLE api_keys ADD COLUMN read_only boolean NOT NULL DEFAULT false;
UPDATE api_keys k SET read_only = true FROM users u WHERE u.id = k.user_id AND u.role = 'regulator';

CREATE FUNCTION api_keys_regulator_read_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT NEW.read_only AND EXISTS (SELECT 1 FROM users WHERE id = NEW.user_id
                                     AND role = 'regulator') THEN
        RAISE EXCEPTION 'a regulator''s API keys are read-only';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER api_keys_regulator_read_only BEFORE INSERT OR UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_regulator_read_only();

-- A session or key revoked, or a user deactivated, is announced on vigil_auth so that every API
-- worker ends the live streams opened with it at once (not at the next idle heartbeat).
CREATE FUNCTION api_announce_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        IF OLD.active AND NOT NEW.active THEN
            PERFORM pg_notify('vigil_auth', json_build_object(
                'kind', 'revocation', 'of', 'user', 'id', NEW.id)::text);
        END IF;
    ELSIF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
        PERFORM pg_notify('vigil_auth', json_build_object(
            'kind', 'revocation',
            'of', CASE TG_TABLE_NAME WHEN 'api_keys' THEN 'api_key' ELSE 'session' END,
            'id', NEW.id)::text);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER api_sessions_announce AFTER UPDATE OF revoked_at ON api_sessions
    FOR EACH ROW EXECUTE FUNCTION api_announce_revocation();
CREATE TRIGGER api_keys_announce AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_announce_revocation();
CREATE TRIGGER users_announce AFTER UPDATE OF active ON users
    FOR EACH ROW EXECUTE FUNCTION api_announce_revocation();

-- Failed logins per account ('user:<name>') and per client address ('addr:<ip>'): after a few,
-- each further failure locks the key for a growing delay (api.auth.flows).
CREATE TABLE login_throttle (
    key              text PRIMARY KEY,
    failures         integer NOT NULL CHECK (failures >= 0),
    last_failure_at  timestamptz NOT NULL,
    locked_until     timestamptz
);
