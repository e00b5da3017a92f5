-- The latest health of each site device as its agent reports it (state,
-- not history: one row per device, replaced by each report).
CREATE TABLE device_status (
    site_id        TEXT NOT NULL,
    device         TEXT NOT NULL,
    kind           TEXT NOT NULL,
    connected      BIGINT NOT NULL,
    last_good_ms   BIGINT NOT NULL,
    last_error     TEXT NOT NULL,
    last_error_ms  BIGINT NOT NULL,
    errors         BIGINT NOT NULL,
    reconnects     BIGINT NOT NULL,
    shed           BIGINT NOT NULL,
    gaps           BIGINT NOT NULL,
    malformed      BIGINT NOT NULL,
    reported_ms    BIGINT NOT NULL,
    PRIMARY KEY (site_id, device)
);
-- Gaps an adapter reported name their device ('' for the log's own drops).
ALTER TABLE gaps ADD COLUMN device TEXT NOT NULL DEFAULT '';
