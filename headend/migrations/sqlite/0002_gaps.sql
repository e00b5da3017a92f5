-- Entries an agent's log dropped (disk bound, corruption), as reported by
-- the agent's gap records; one row per gap record (exactly once).
CREATE TABLE gaps (
    site_id      TEXT NOT NULL,
    log_id       BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    first_seq    BIGINT NOT NULL,
    last_seq     BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    class        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    from_ts_ms   BIGINT NOT NULL,
    to_ts_ms     BIGINT NOT NULL,
    ingested_ms  BIGINT NOT NULL,
    PRIMARY KEY (site_id, log_id, seq)
);
CREATE INDEX gaps_by_time ON gaps (site_id, from_ts_ms);
