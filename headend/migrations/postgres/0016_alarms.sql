-- Issue 32: gauge alarms become episodes. Times are Unix ms; device times
-- (raised, cleared) come from the readings, the rest from the headend.

-- One row per alarm point (site, asset, field `alarm.<name>`): the last
-- reading applied (its device time and agent log position, so that a
-- redelivery applies nothing) and the episode open now, if any.
CREATE TABLE alarm_points (
    site_id          TEXT NOT NULL,
    asset_id         TEXT NOT NULL,
    field            TEXT NOT NULL,
    active           BIGINT NOT NULL,
    last_ts_ms       BIGINT NOT NULL,
    last_log_id      BIGINT NOT NULL,
    last_seq         BIGINT NOT NULL,
    last_cleared_ms  BIGINT,
    open_episode     TEXT,
    open_raised_ms   BIGINT,
    late             BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, asset_id, field)
);

-- One row per raise: the reading that raised it, its clear (by the device
-- only), and what people did (acknowledged, shelved). The state a person
-- sees is derived from these facts and the clock, never stored.
CREATE TABLE alarm_episodes (
    episode_id        TEXT PRIMARY KEY,
    site_id           TEXT NOT NULL,
    asset_id          TEXT NOT NULL,
    field             TEXT NOT NULL,
    alarm_type        TEXT NOT NULL,
    severity          TEXT NOT NULL,
    raised_ms         BIGINT NOT NULL,
    cleared_ms        BIGINT,
    raised_value      DOUBLE PRECISION NOT NULL,
    source            TEXT NOT NULL,
    raised_log_id     BIGINT NOT NULL,
    raised_seq        BIGINT NOT NULL,
    acked_ms          BIGINT,
    acked_by          TEXT,
    ack_note          TEXT,
    shelved_until_ms  BIGINT,
    shelve_reason     TEXT,
    updated_ms        BIGINT NOT NULL
);
CREATE INDEX alarm_episodes_by_raised ON alarm_episodes (raised_ms, episode_id);
CREATE INDEX alarm_episodes_by_site ON alarm_episodes (site_id, raised_ms);
CREATE INDEX alarm_episodes_by_asset ON alarm_episodes (site_id, asset_id, raised_ms);

-- An episode's timeline: raised, cleared, acknowledged, shelved, notes.
CREATE TABLE alarm_events (
    id           BIGSERIAL PRIMARY KEY,
    episode_id   TEXT NOT NULL,
    at_ms        BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    note         TEXT NOT NULL
);
CREATE INDEX alarm_events_by_episode ON alarm_events (episode_id, id);
