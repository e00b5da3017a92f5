-- Issue 33: the days a site sells like a Sunday (its public holidays), a
-- JSON array of local dates (YYYY-MM-DD) its forecast walks at the
-- Sunday's rates. Expand-only: the previous release ignores the column.
ALTER TABLE sites ADD COLUMN holidays TEXT NOT NULL DEFAULT '[]';
