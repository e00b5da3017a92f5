-- The site an audit entry is about (NULL: none, e.g. users, keys, logins),
-- so a site-scoped reader of the trail sees only its sites' entries. In
-- the entry's hash when present (older entries hash as before).
ALTER TABLE audit_log ADD COLUMN site_id TEXT;
CREATE INDEX audit_log_site ON audit_log (site_id, seq);
