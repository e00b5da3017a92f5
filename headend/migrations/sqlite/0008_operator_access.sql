-- Operator access (issue 13): users, sessions (refresh-token families),
-- access tokens, API keys and the audit trail with its hash chain.
-- Secrets are stored only as hashes: passwords argon2id (PHC string with
-- its parameters), tokens and key secrets SHA-256.

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    role           TEXT NOT NULL,
    scope          TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    disabled_ms    BIGINT,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL
);

-- A login: one family of refresh tokens. Revoking it ends every token of it.
CREATE TABLE auth_sessions (
    session_id      TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (user_id),
    client          TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    refreshed_ms    BIGINT NOT NULL,
    expires_ms      BIGINT NOT NULL,
    revoked_ms      BIGINT,
    revoked_reason  TEXT
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES auth_sessions (session_id),
    issued_ms   BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    used_ms     BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE access_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES auth_sessions (session_id),
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_ms);

CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    role          TEXT NOT NULL,
    scope         TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    expires_ms    BIGINT,
    last_used_ms  BIGINT,
    revoked_ms    BIGINT
);

-- Append-only: the API has no route that changes or removes a row, and
-- `headend audit verify` finds one changed in SQL (hash chain).
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    status      BIGINT NOT NULL,
    summary     TEXT NOT NULL,
    client      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
-- The chain's head, written with each entry: removing entries at the end
-- leaves it pointing past them.
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
