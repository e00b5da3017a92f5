-- Issue 34: the operator console's forms carry a token of their session
-- (a form posted from another origin cannot know it). Sessions started
-- before this have none, and the console refuses their forms until the
-- user logs in again.
ALTER TABLE auth_sessions ADD COLUMN csrf TEXT NOT NULL DEFAULT '';
