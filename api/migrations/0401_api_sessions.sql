-- Console and API sessions: a login hands out a random token; only its SHA-256 is kept here, so
-- every API worker can check it and a logout (revocation) takes effect everywhere at once.

CREATE TABLE api_sessions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    token_hash  text NOT NULL UNIQUE CHECK (length(token_hash) = 64),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CHECK (expires_at > created_at),
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
CREATE INDEX api_sessions_user_idx ON api_sessions (user_id);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);
