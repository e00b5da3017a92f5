-- Finished days packed (PostgreSQL only; SQLite's WITHOUT ROWID table is
-- already in key order). ADR 0006. A row-per-reading heap costs ~60 bytes
-- of header and line pointer per reading whatever its columns, and a
-- time-major day scatters one point's readings over every page. The
-- compaction job moves a finished day's raw rows here: one row per point
-- and hour, its readings as arrays in (ts_ms, seq) order, deduplicated.
-- Partitioned by day like `readings` (same bounds, same names with
-- `packed_` in front); retention drops both.
CREATE TABLE packed_readings (
    hour_ms   BIGINT NOT NULL,
    point_id  INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    ts_ms     BIGINT[] NOT NULL,
    seq       BIGINT[] NOT NULL,
    value     DOUBLE PRECISION[] NOT NULL,
    quality   SMALLINT[] NOT NULL,
    -- NULL when no reading of the hour has an error
    error_id  INTEGER[],
    PRIMARY KEY (point_id, hour_ms)
) PARTITION BY RANGE (hour_ms);
CREATE TABLE packed_readings_default PARTITION OF packed_readings DEFAULT;

-- Readings with their point spelled out, raw and packed alike.
CREATE OR REPLACE VIEW readings_wide AS
    SELECT p.site_id, p.asset_id, p.field, p.unit, p.source, r.seq, r.ts_ms, r.value, r.quality
    FROM readings r JOIN points p ON p.point_id = r.point_id
    UNION ALL
    SELECT p.site_id, p.asset_id, p.field, p.unit, p.source, u.seq, u.ts_ms, u.value, u.quality
    FROM packed_readings k JOIN points p ON p.point_id = k.point_id,
         UNNEST(k.seq, k.ts_ms, k.value, k.quality) AS u(seq, ts_ms, value, quality);
