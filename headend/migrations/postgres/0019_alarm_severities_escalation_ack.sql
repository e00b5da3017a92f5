-- Issue 32: a site's own alarm severities (a type absent here keeps the
-- fuel domain's default), and escalations acknowledged and snoozed.
CREATE TABLE alarm_severities (
    site_id     TEXT NOT NULL,
    alarm_type  TEXT NOT NULL,
    severity    TEXT NOT NULL,
    PRIMARY KEY (site_id, alarm_type)
);

-- Who acknowledged an escalation and when (once per case; a reopened case
-- is to be acknowledged again); until when it is snoozed and why (its
-- "updated" webhooks are held back meanwhile).
ALTER TABLE escalations ADD COLUMN acked_ms BIGINT;
ALTER TABLE escalations ADD COLUMN acked_by TEXT;
ALTER TABLE escalations ADD COLUMN snoozed_until_ms BIGINT;
ALTER TABLE escalations ADD COLUMN snooze_reason TEXT;
