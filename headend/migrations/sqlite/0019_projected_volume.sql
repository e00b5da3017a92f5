-- Issue 33: a silent gauge's volume is projected by the forecast. The
-- state's `volume_l` is then the projection (source `projected`) and
-- `reading_l` the last observation it starts from (the same as `volume_l`
-- when not projected).
ALTER TABLE tank_state ADD COLUMN reading_l DOUBLE PRECISION;

-- Since when the gauge has shown its current value to the last bit (kept
-- from one evaluation to the next): a stuck gauge is judged by what the
-- profile expected to sell since.
ALTER TABLE tank_state ADD COLUMN flat_since_ms BIGINT;
