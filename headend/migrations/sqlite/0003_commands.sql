-- Command plane (sqlite). Times are Unix milliseconds (UTC).

-- Writable points of an asset with the agent's limits (JSON array of
-- {field, min, max, default}), from the agent's hello.
ALTER TABLE assets ADD COLUMN writable TEXT NOT NULL DEFAULT '[]';

-- One row per command. `seq` is the order of issue (a newer command for
-- the same point supersedes an older one at the agent).
CREATE TABLE commands (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id       TEXT NOT NULL UNIQUE,
    -- a repeated POST with the same key returns this command
    idempotency_key  TEXT UNIQUE,
    -- canonical JSON of the request, to refuse a key reused for another request
    request          TEXT NOT NULL,
    -- a site-level split's parent command (children carry it)
    parent_id        TEXT,
    site_id          TEXT NOT NULL,
    -- '' for a site-level (split) command
    asset_id         TEXT NOT NULL,
    -- setpoint | eta | split
    kind             TEXT NOT NULL,
    field            TEXT NOT NULL,
    value            DOUBLE PRECISION,
    duration_ms      BIGINT NOT NULL,
    expires_at_ms    BIGINT NOT NULL,
    -- eta: the EtaAction as JSON; split: the allocation
    payload          TEXT NOT NULL,
    load_id          TEXT,
    state            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    detail           TEXT NOT NULL,
    readback         DOUBLE PRECISION,
    policy_version   TEXT NOT NULL,
    warnings         TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    cancel_requested_ms BIGINT
);
CREATE INDEX commands_by_site_state ON commands (site_id, state, seq);
CREATE INDEX commands_by_parent ON commands (parent_id);

-- The timeline: every transition and delivery attempt, who/what caused it.
-- Agent acks carry their log position, so each is stored exactly once.
CREATE TABLE command_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id  TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    -- the command's state after this event
    state       TEXT NOT NULL,
    -- ack reason code or headend event (sent, redelivered, expired, cancel_requested)
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    site_id     TEXT,
    log_id      BIGINT,
    log_seq     BIGINT,
    UNIQUE (site_id, log_id, log_seq)
);
CREATE INDEX command_events_by_command ON command_events (command_id, id);

-- Expected deliveries. load_id is the load reference sent to the agent.
CREATE TABLE loads (
    load_id             TEXT PRIMARY KEY,
    reference           TEXT NOT NULL,
    carrier             TEXT NOT NULL,
    site_id             TEXT NOT NULL,
    -- JSON array of tank asset ids
    tanks               TEXT NOT NULL,
    product             TEXT NOT NULL,
    planned_volume_l    DOUBLE PRECISION NOT NULL,
    eta_ms              BIGINT NOT NULL,
    -- carrier_api | email | csv | manual
    eta_source          TEXT NOT NULL,
    -- planned | delivering | delivered | cancelled
    status              TEXT NOT NULL,
    delivered_volume_l  DOUBLE PRECISION,
    delivery_start_ms   BIGINT,
    delivery_end_ms     BIGINT,
    last_command_id     TEXT,
    created_ms          BIGINT NOT NULL,
    updated_ms          BIGINT NOT NULL
);
CREATE INDEX loads_by_site ON loads (site_id, eta_ms);

-- ETA changes and delivery detections of a load, with their source.
CREATE TABLE load_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    load_id     TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    actor       TEXT NOT NULL
);
CREATE INDEX load_events_by_load ON load_events (load_id, id);

-- Deliveries the agents detected (exactly once by log position).
CREATE TABLE delivery_events (
    site_id             TEXT NOT NULL,
    log_id              BIGINT NOT NULL,
    seq                 BIGINT NOT NULL,
    phase               TEXT NOT NULL,
    load_id             TEXT NOT NULL,
    tank                TEXT NOT NULL,
    start_ms            BIGINT NOT NULL,
    end_ms              BIGINT NOT NULL,
    start_volume_l      DOUBLE PRECISION NOT NULL,
    end_volume_l        DOUBLE PRECISION NOT NULL,
    delivered_volume_l  DOUBLE PRECISION NOT NULL,
    ingested_ms         BIGINT NOT NULL,
    PRIMARY KEY (site_id, log_id, seq)
);
