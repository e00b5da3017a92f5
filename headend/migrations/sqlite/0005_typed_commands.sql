-- Typed command model (issue 9): every stored state, kind, reason, status
-- and actor is a value the headend parses; an unknown one fails the read.

-- A command's reason was '' until its first transition: it is now the
-- step that put it in its state.
UPDATE commands SET reason = 'submitted' WHERE reason = '';

-- A split parent's state is stored and follows its children's (it was
-- computed when read, so `?state=` filtered on a stale value): the least
-- advanced child still under way; once all ended, the first child that
-- did not complete, else completed.
UPDATE commands SET state = COALESCE(
    (SELECT c.state FROM commands c
      WHERE c.parent_id = commands.command_id AND c.state IN ('submitted', 'sent', 'acked', 'active')
      ORDER BY CASE c.state WHEN 'submitted' THEN 0 WHEN 'sent' THEN 1 WHEN 'acked' THEN 2 ELSE 3 END
      LIMIT 1),
    (SELECT c.state FROM commands c
      WHERE c.parent_id = commands.command_id AND c.state <> 'completed'
      ORDER BY c.seq LIMIT 1),
    CASE WHEN EXISTS (SELECT 1 FROM commands c WHERE c.parent_id = commands.command_id)
         THEN 'completed' ELSE 'submitted' END)
WHERE kind = 'split';

-- What the site's last recorded hello said (agent version and assets), as
-- a digest: a reconnecting agent whose hello says the same is answered by
-- a read alone (no writer transaction per session in a reconnect storm).
ALTER TABLE sites ADD COLUMN hello_digest TEXT NOT NULL DEFAULT '';
