-- Fuel operations (issue 15): site settings, tanks the operator owns,
-- inventory observations with their source, the maintained state of each
-- tank, the ETA history of loads, escalations with their timeline and
-- webhook outbox, and job cursors. Times are Unix ms.

-- A site's operator settings (a site made by an admin before its agent's
-- first hello has first_seen_ms = 0).
ALTER TABLE sites ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE sites ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
ALTER TABLE sites ADD COLUMN stale_after_ms BIGINT NOT NULL DEFAULT 21600000;

-- Tanks as the operator configures them. A tank an agent declares is
-- added at its hello (capacity and product from the agent); later hellos
-- never overwrite what an operator set.
CREATE TABLE tanks (
    site_id         TEXT NOT NULL,
    tank_id         TEXT NOT NULL,
    name            TEXT NOT NULL,
    product         TEXT NOT NULL,
    capacity_l      DOUBLE PRECISION NOT NULL,
    -- alert levels and the unusable bottom, litres
    low_l           DOUBLE PRECISION NOT NULL,
    critical_l      DOUBLE PRECISION NOT NULL,
    floor_l         DOUBLE PRECISION NOT NULL,
    water_limit_mm  DOUBLE PRECISION,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    PRIMARY KEY (site_id, tank_id)
);

-- Tanks the agents declared before this migration, with default levels
-- (low 25 %, critical 10 % of capacity, no unusable bottom).
INSERT INTO tanks (site_id, tank_id, name, product, capacity_l, low_l, critical_l, floor_l, water_limit_mm, created_ms, updated_ms)
    SELECT site_id, asset_id, name, product, capacity, capacity * 0.25, capacity * 0.10, 0, NULL, updated_ms, updated_ms
    FROM assets WHERE kind = 'tank' AND capacity > 0;

-- Observations that do not come from the agent's gauge: manual overrides,
-- API pushes and CSV imports. The key makes a repeated push or import a
-- no-op.
CREATE TABLE observations (
    site_id      TEXT NOT NULL,
    tank_id      TEXT NOT NULL,
    source       TEXT NOT NULL,
    at_ms        BIGINT NOT NULL,
    volume_l     DOUBLE PRECISION NOT NULL,
    water_mm     DOUBLE PRECISION,
    confidence   DOUBLE PRECISION NOT NULL,
    note         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    recorded_ms  BIGINT NOT NULL,
    PRIMARY KEY (site_id, tank_id, source, at_ms)
);

-- What the inventory job last concluded of each tank (the tank list and
-- the risk list read this, never raw readings).
CREATE TABLE tank_state (
    site_id          TEXT NOT NULL,
    tank_id          TEXT NOT NULL,
    volume_l         DOUBLE PRECISION,
    water_mm         DOUBLE PRECISION,
    observed_ms      BIGINT,
    source           TEXT,
    confidence       DOUBLE PRECISION,
    freshness        TEXT NOT NULL,
    flags            TEXT NOT NULL,
    rate_lph         DOUBLE PRECISION,
    rate_basis       TEXT,
    rate_confidence  DOUBLE PRECISION,
    hours_to_runout  DOUBLE PRECISION,
    runout_ms        BIGINT,
    risk             TEXT NOT NULL,
    next_load_id     TEXT,
    next_eta_ms      BIGINT,
    margin_h         DOUBLE PRECISION,
    evaluated_ms     BIGINT NOT NULL,
    PRIMARY KEY (site_id, tank_id)
);
CREATE INDEX tank_state_runout ON tank_state (runout_ms);

-- Every ETA a load was given, with its source; applied = 1 when it became
-- the load's ETA (a lower-ranked source never replaces a higher one's).
CREATE TABLE load_etas (
    id          BIGSERIAL PRIMARY KEY,
    load_id     TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    eta_ms      BIGINT NOT NULL,
    source      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    applied     BIGINT NOT NULL
);
CREATE INDEX load_etas_by_load ON load_etas (load_id, id);
-- late | missing (NULL: on time or done), set by the inventory job
ALTER TABLE loads ADD COLUMN timing TEXT;
-- site + reference of a load made by a CSV import (a repeated import is a no-op)
ALTER TABLE loads ADD COLUMN import_key TEXT;
CREATE UNIQUE INDEX loads_import_key ON loads (import_key);

-- Escalations: at most one open per (site, tank, cause): open_key holds
-- that triple while it is open and NULL once resolved.
CREATE TABLE escalations (
    escalation_id  TEXT PRIMARY KEY,
    site_id        TEXT NOT NULL,
    tank_id        TEXT NOT NULL,
    cause          TEXT NOT NULL,
    state          TEXT NOT NULL,
    open_key       TEXT UNIQUE,
    subject        TEXT NOT NULL,
    detail         TEXT NOT NULL,
    context        TEXT NOT NULL,
    assignee       TEXT,
    opened_ms      BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    resolved_ms    BIGINT
);
CREATE INDEX escalations_by_state ON escalations (state, opened_ms);
CREATE INDEX escalations_by_site ON escalations (site_id, opened_ms);

CREATE TABLE escalation_events (
    id             BIGSERIAL PRIMARY KEY,
    escalation_id  TEXT NOT NULL,
    at_ms          BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    state          TEXT NOT NULL,
    actor          TEXT NOT NULL,
    note           TEXT NOT NULL,
    context        TEXT NOT NULL
);
CREATE INDEX escalation_events_by_escalation ON escalation_events (escalation_id, id);

-- Webhook notifications waiting, sent, or given up (the dead letters).
CREATE TABLE webhook_outbox (
    id             BIGSERIAL PRIMARY KEY,
    escalation_id  TEXT NOT NULL,
    event          TEXT NOT NULL,
    payload        TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    attempts       BIGINT NOT NULL,
    next_ms        BIGINT NOT NULL,
    state          TEXT NOT NULL,
    last_error     TEXT NOT NULL,
    done_ms        BIGINT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_ms);

-- Where a job's scan stands (e.g. the last command event it looked at).
CREATE TABLE job_cursors (
    job    TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);

-- The headend's verdict on a detected delivery (confirmed | sensor_jump;
-- NULL until judged): only confirmed ones explain a rise in the inventory.
ALTER TABLE delivery_events ADD COLUMN verdict TEXT;
