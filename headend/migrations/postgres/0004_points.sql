-- Telemetry for fleet scale (PostgreSQL): a points dimension, narrow
-- reading rows partitioned by day, hourly rollups, job leases. ADR 0006.
-- Same tables and columns as the SQLite tree (a test compares them).

CREATE TABLE points (
    point_id  SERIAL PRIMARY KEY,
    site_id   TEXT NOT NULL,
    asset_id  TEXT NOT NULL,
    field     TEXT NOT NULL,
    unit      TEXT NOT NULL,
    source    TEXT NOT NULL,
    UNIQUE (site_id, asset_id, field, unit, source)
);

CREATE TABLE reading_errors (
    error_id  SERIAL PRIMARY KEY,
    text      TEXT NOT NULL UNIQUE
);

-- Narrow rows, partitioned by source time: one partition per UTC day
-- (readings_pYYYYMMDD, made ahead by the headend), times outside the
-- window made ahead land in readings_default. Retention drops whole
-- partitions. Columns ordered for alignment (8-byte ones first); a NULL
-- value or error_id takes no space.
CREATE TABLE readings_n (
    ts_ms     BIGINT NOT NULL,
    seq       BIGINT NOT NULL,
    value     DOUBLE PRECISION,
    point_id  INTEGER NOT NULL,
    error_id  INTEGER,
    quality   SMALLINT NOT NULL,
    PRIMARY KEY (point_id, ts_ms, seq)
) PARTITION BY RANGE (ts_ms);
CREATE TABLE readings_default PARTITION OF readings_n DEFAULT;

INSERT INTO points (site_id, asset_id, field, unit, source)
    SELECT DISTINCT site_id, asset_id, field, unit, source FROM readings;
INSERT INTO reading_errors (text)
    SELECT DISTINCT error FROM readings WHERE error <> '';
INSERT INTO readings_n (point_id, ts_ms, seq, value, quality, error_id)
    SELECT p.point_id, r.source_ts_ms, r.seq,
           CASE WHEN r.quality = 'bad' THEN NULL ELSE r.value END,
           CASE r.quality WHEN 'good' THEN 1 WHEN 'uncertain' THEN 2 ELSE 3 END,
           e.error_id
    FROM readings r
    JOIN points p ON p.site_id = r.site_id AND p.asset_id = r.asset_id AND p.field = r.field
                 AND p.unit = r.unit AND p.source = r.source
    LEFT JOIN reading_errors e ON e.text = r.error AND r.error <> ''
    ON CONFLICT DO NOTHING;
DROP TABLE readings;
ALTER TABLE readings_n RENAME TO readings;

CREATE TABLE rollups_hourly (
    point_id    INTEGER NOT NULL,
    hour_ms     BIGINT NOT NULL,
    n           BIGINT NOT NULL,
    min_value   DOUBLE PRECISION NOT NULL,
    max_value   DOUBLE PRECISION NOT NULL,
    sum_value   DOUBLE PRECISION NOT NULL,
    last_ts_ms  BIGINT NOT NULL,
    last_value  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (point_id, hour_ms)
);

INSERT INTO rollups_hourly (point_id, hour_ms, n, min_value, max_value, sum_value, last_ts_ms, last_value)
    SELECT point_id, ts_ms - (((ts_ms % 3600000) + 3600000) % 3600000), COUNT(*), MIN(value), MAX(value), SUM(value), MAX(ts_ms),
           (ARRAY_AGG(value ORDER BY ts_ms DESC, seq DESC))[1]
    FROM readings WHERE value IS NOT NULL
    GROUP BY point_id, ts_ms - (((ts_ms % 3600000) + 3600000) % 3600000);

CREATE TABLE job_leases (
    job       TEXT PRIMARY KEY,
    holder    TEXT NOT NULL,
    until_ms  BIGINT NOT NULL
);

-- Readings with their point spelled out, for ad-hoc SQL and tests.
CREATE VIEW readings_wide AS
    SELECT p.site_id, p.asset_id, p.field, p.unit, p.source, r.seq, r.ts_ms, r.value, r.quality
    FROM readings r JOIN points p ON p.point_id = r.point_id;
