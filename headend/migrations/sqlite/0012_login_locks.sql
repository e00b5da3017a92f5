-- Login failures per user name and client network, shared by every
-- replica (a lock taken on one holds on all; an admin's unlock, or
-- `headend user unlock`, lifts it everywhere). Rows unseen for a day go.
CREATE TABLE login_failures (
    user_id          TEXT NOT NULL,
    net              TEXT NOT NULL,
    failures         BIGINT NOT NULL,
    locked_until_ms  BIGINT NOT NULL,
    seen_ms          BIGINT NOT NULL,
    PRIMARY KEY (user_id, net)
);
CREATE INDEX login_failures_seen ON login_failures (seen_ms);
