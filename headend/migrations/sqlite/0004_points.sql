-- Telemetry for fleet scale (SQLite): a points dimension, narrow reading
-- rows, hourly rollups, job leases. ADR 0006.

-- One small id per (site, asset, field, unit, source): a reading row
-- carries the id, not the five strings.
CREATE TABLE points (
    point_id  INTEGER PRIMARY KEY,
    site_id   TEXT NOT NULL,
    asset_id  TEXT NOT NULL,
    field     TEXT NOT NULL,
    unit      TEXT NOT NULL,
    source    TEXT NOT NULL,
    UNIQUE (site_id, asset_id, field, unit, source)
);

-- Error texts of bad readings, each stored once.
CREATE TABLE reading_errors (
    error_id  INTEGER PRIMARY KEY,
    text      TEXT NOT NULL UNIQUE
);

-- Narrow rows, clustered by point and time (WITHOUT ROWID: the table is
-- its primary key's B-tree, no second index). The key is the idempotency
-- key: an agent's (log, seq) always carries the same point and source
-- time, so a redelivered reading meets its own key. quality: 1 good,
-- 2 uncertain, 3 bad (the proto's numbers); value NULL when bad.
CREATE TABLE readings_n (
    point_id  INTEGER NOT NULL,
    ts_ms     INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    value     REAL,
    quality   INTEGER NOT NULL,
    error_id  INTEGER,
    PRIMARY KEY (point_id, ts_ms, seq)
) WITHOUT ROWID;

INSERT INTO points (site_id, asset_id, field, unit, source)
    SELECT DISTINCT site_id, asset_id, field, unit, source FROM readings;
INSERT INTO reading_errors (text)
    SELECT DISTINCT error FROM readings WHERE error <> '';
INSERT OR IGNORE INTO readings_n (point_id, ts_ms, seq, value, quality, error_id)
    SELECT p.point_id, r.source_ts_ms, r.seq,
           CASE WHEN r.quality = 'bad' THEN NULL ELSE r.value END,
           CASE r.quality WHEN 'good' THEN 1 WHEN 'uncertain' THEN 2 ELSE 3 END,
           e.error_id
    FROM readings r
    JOIN points p ON p.site_id = r.site_id AND p.asset_id = r.asset_id AND p.field = r.field
                 AND p.unit = r.unit AND p.source = r.source
    LEFT JOIN reading_errors e ON e.text = r.error AND r.error <> '';
DROP TABLE readings;
ALTER TABLE readings_n RENAME TO readings;

-- Hourly rollups of the readings that carry a value (good or uncertain):
-- count, min, max, sum (mean = sum / n) and the last value.
CREATE TABLE rollups_hourly (
    point_id    INTEGER NOT NULL,
    hour_ms     INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    min_value   REAL NOT NULL,
    max_value   REAL NOT NULL,
    sum_value   REAL NOT NULL,
    last_ts_ms  INTEGER NOT NULL,
    last_value  REAL NOT NULL,
    PRIMARY KEY (point_id, hour_ms)
) WITHOUT ROWID;

INSERT INTO rollups_hourly (point_id, hour_ms, n, min_value, max_value, sum_value, last_ts_ms, last_value)
    SELECT point_id, ts_ms - (((ts_ms % 3600000) + 3600000) % 3600000), COUNT(*), MIN(value), MAX(value), SUM(value), MAX(ts_ms),
           (SELECT r2.value FROM readings r2 WHERE r2.point_id = r.point_id
              AND r2.ts_ms - (((r2.ts_ms % 3600000) + 3600000) % 3600000) = r.ts_ms - (((r.ts_ms % 3600000) + 3600000) % 3600000) AND r2.value IS NOT NULL
            ORDER BY r2.ts_ms DESC, r2.seq DESC LIMIT 1)
    FROM readings r WHERE value IS NOT NULL
    GROUP BY point_id, ts_ms - (((ts_ms % 3600000) + 3600000) % 3600000);

-- One holder per background job across replicas (jobs/).
CREATE TABLE job_leases (
    job       TEXT PRIMARY KEY,
    holder    TEXT NOT NULL,
    until_ms  BIGINT NOT NULL
);

-- Readings with their point spelled out, for ad-hoc SQL and tests.
CREATE VIEW readings_wide AS
    SELECT p.site_id, p.asset_id, p.field, p.unit, p.source, r.seq, r.ts_ms, r.value, r.quality
    FROM readings r JOIN points p ON p.point_id = r.point_id;
