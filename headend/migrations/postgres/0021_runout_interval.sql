-- Issue 33: each runout has a p10-p90 interval (it comes before p10 one
-- time in ten, after p90 one time in ten), and the risk reads its early end.
ALTER TABLE tank_state ADD COLUMN runout_p10_ms BIGINT;
ALTER TABLE tank_state ADD COLUMN runout_p90_ms BIGINT;
