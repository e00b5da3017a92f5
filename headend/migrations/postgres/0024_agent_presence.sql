-- Issue 35: which replica holds each site's agent session, so that every
-- replica's site list says "connected" for a session on another. A row is
-- believed while its replica's heartbeat is fresh (a replica that died
-- stops beating; its rows are then ignored, and deleted at its restart).
CREATE TABLE replicas (
    replica  TEXT PRIMARY KEY,
    seen_ms  BIGINT NOT NULL
);
CREATE TABLE agent_sessions (
    site_id        TEXT PRIMARY KEY,
    replica        TEXT NOT NULL,
    session_id     BIGINT NOT NULL,
    since_ms       BIGINT NOT NULL,
    peer           TEXT NOT NULL,
    agent_version  TEXT NOT NULL
);
