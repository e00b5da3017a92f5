-- Who saw a delivery: the agent's volume-rise detector or the tank gauge's
-- own record. Events stored before this were all the detector's.
ALTER TABLE delivery_events ADD COLUMN source TEXT NOT NULL DEFAULT 'detector';
-- The source of a load's delivered volume; a gauge's record is never
-- overwritten by the detector (NULL while nothing was delivered).
ALTER TABLE loads ADD COLUMN delivery_source TEXT;
