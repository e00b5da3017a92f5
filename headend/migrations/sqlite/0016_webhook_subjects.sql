-- Issue 32: the webhook outbox carries alarm changes as well as escalation
-- changes. `subject` says which (`escalation_id` holds the escalation's or
-- the alarm episode's id); `order_key` is what must arrive in order (an
-- escalation; an alarm point: its episodes one after another), so a row
-- waits while an earlier row of its key is pending.
ALTER TABLE webhook_outbox ADD COLUMN subject TEXT NOT NULL DEFAULT 'escalation';
ALTER TABLE webhook_outbox ADD COLUMN order_key TEXT NOT NULL DEFAULT '';
UPDATE webhook_outbox SET order_key = escalation_id;
CREATE INDEX webhook_outbox_pending ON webhook_outbox (state, id);
