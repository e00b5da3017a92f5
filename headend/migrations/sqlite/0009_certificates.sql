-- Device enrollment and the certificate lifecycle (issue 14). Times are Unix ms.

-- One-time enrollment tokens: bound to a site, stored hashed, single use.
CREATE TABLE enrollment_tokens (
    token_id     TEXT PRIMARY KEY,
    site_id      TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    used_ms      BIGINT,
    used_serial  TEXT
);
CREATE INDEX enrollment_tokens_site ON enrollment_tokens (site_id, created_ms);

-- Every agent certificate this headend issued (enrollment or renewal);
-- a renewal names the certificate it renewed (revoking one revokes its
-- renewals too).
CREATE TABLE agent_certificates (
    serial        TEXT PRIMARY KEY,
    site_id       TEXT NOT NULL,
    via           TEXT NOT NULL,
    issued_ms     BIGINT NOT NULL,
    not_after_ms  BIGINT NOT NULL,
    renewed_from  TEXT
);
CREATE INDEX agent_certificates_renewed_from ON agent_certificates (renewed_from);
CREATE INDEX agent_certificates_site ON agent_certificates (site_id, issued_ms);

-- Revoked serial numbers (also of certificates made offline by `pki`).
CREATE TABLE revoked_certificates (
    serial      TEXT PRIMARY KEY,
    site_id     TEXT,
    revoked_ms  BIGINT NOT NULL,
    revoked_by  TEXT NOT NULL,
    reason      TEXT NOT NULL
);

-- Revoked sites: every certificate of the site issued before revoked_ms
-- is refused (a new enrollment after it is not).
CREATE TABLE revoked_sites (
    site_id     TEXT PRIMARY KEY,
    revoked_ms  BIGINT NOT NULL,
    revoked_by  TEXT NOT NULL,
    reason      TEXT NOT NULL
);

-- The certificate each agent last reported: what it holds, when it
-- renews, and its renewal failures.
CREATE TABLE agent_cert_status (
    site_id         TEXT PRIMARY KEY,
    serial          TEXT NOT NULL,
    not_after_ms    BIGINT NOT NULL,
    renew_at_ms     BIGINT NOT NULL,
    failures        BIGINT NOT NULL,
    last_error      TEXT NOT NULL,
    reported_ms     BIGINT NOT NULL
);
