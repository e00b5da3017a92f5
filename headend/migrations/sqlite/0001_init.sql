-- Telemetry schema (SQLite). Times are Unix milliseconds (UTC).
-- log_id is the agent log's random u64 stored bit-for-bit as a signed 64-bit integer.
CREATE TABLE sites (
    site_id        TEXT PRIMARY KEY,
    first_seen_ms  BIGINT NOT NULL,
    last_seen_ms   BIGINT NOT NULL,
    agent_version  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE assets (
    site_id        TEXT NOT NULL REFERENCES sites(site_id),
    asset_id       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    product        TEXT NOT NULL,
    capacity       DOUBLE PRECISION NOT NULL,
    capacity_unit  TEXT NOT NULL,
    details        TEXT NOT NULL DEFAULT '{}',
    updated_ms     BIGINT NOT NULL,
    PRIMARY KEY (site_id, asset_id)
);

-- Highest seq of each agent log committed here (cumulative ack).
CREATE TABLE agent_logs (
    site_id        TEXT NOT NULL,
    log_id         BIGINT NOT NULL,
    acked_through  BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    PRIMARY KEY (site_id, log_id)
);

-- Every reading exactly once: the primary key is the idempotency key.
CREATE TABLE readings (
    site_id         TEXT NOT NULL,
    log_id          BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    asset_id        TEXT NOT NULL,
    field           TEXT NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    unit            TEXT NOT NULL,
    quality         TEXT NOT NULL,
    source_ts_ms    BIGINT NOT NULL,
    received_ts_ms  BIGINT NOT NULL,
    ingested_ms     BIGINT NOT NULL,
    source          TEXT NOT NULL,
    error           TEXT NOT NULL,
    PRIMARY KEY (site_id, log_id, seq)
);
CREATE INDEX readings_by_point ON readings (site_id, asset_id, field, source_ts_ms);

-- Newest reading per (site, asset, field); value is the last good one.
CREATE TABLE latest_values (
    site_id         TEXT NOT NULL,
    asset_id        TEXT NOT NULL,
    field           TEXT NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    unit            TEXT NOT NULL,
    quality         TEXT NOT NULL,
    error           TEXT NOT NULL,
    source_ts_ms    BIGINT NOT NULL,
    received_ts_ms  BIGINT NOT NULL,
    good_ts_ms      BIGINT NOT NULL,
    source          TEXT NOT NULL,
    PRIMARY KEY (site_id, asset_id, field)
);
