-- Issue 35: each replica's dispatch safety net asks, every 30 s, which
-- sites have something to send (not per session); a partial index keeps
-- that one query small however long the command history grows.
CREATE INDEX commands_pending ON commands (site_id)
  WHERE kind <> 'split' AND state IN ('submitted', 'sent', 'acked', 'active');
