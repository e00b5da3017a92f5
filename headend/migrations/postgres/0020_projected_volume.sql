-- Issue 33: a silent gauge's volume is projected by the forecast. The
-- state's `volume_l` is then the projection (source `projected`) and
-- `reading_l` the last observation it starts from (the same as `volume_l`
-- when not projected).
ALTER TABLE tank_state ADD COLUMN reading_l DOUBLE PRECISION;
