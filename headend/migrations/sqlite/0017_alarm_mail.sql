-- Issue 32: alarm mails. Who gets a site's alarm mails (each at or above a
-- severity), the mails queued with their delivery state, and per episode
-- when the headend stored it and last mailed about it.
ALTER TABLE alarm_episodes ADD COLUMN stored_ms BIGINT NOT NULL DEFAULT 0;
UPDATE alarm_episodes SET stored_ms = updated_ms;
ALTER TABLE alarm_episodes ADD COLUMN last_mail_ms BIGINT;

CREATE TABLE alarm_recipients (
    site_id       TEXT NOT NULL,
    address       TEXT NOT NULL,
    min_severity  TEXT NOT NULL,
    PRIMARY KEY (site_id, address)
);

-- One row per mail to one recipient: pending (with its next attempt),
-- held (over the recipient's limit, for the next digest), sent, digested
-- (went out inside a digest) or dead (given up).
CREATE TABLE mail_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    episode_id   TEXT NOT NULL,
    site_id      TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    next_ms      BIGINT NOT NULL,
    last_error   TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    done_ms      BIGINT
);
CREATE INDEX mail_outbox_by_state ON mail_outbox (state, next_ms);
CREATE INDEX mail_outbox_by_recipient ON mail_outbox (recipient, created_ms);
