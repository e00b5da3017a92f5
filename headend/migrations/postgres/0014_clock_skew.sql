-- A site's clock against the headend's, measured at each session
-- (issue 28): positive when the agent is ahead, ms; NULL until measured.
ALTER TABLE sites ADD COLUMN clock_skew_ms BIGINT;
ALTER TABLE sites ADD COLUMN clock_checked_ms BIGINT;
