-- Issue 31: JSON columns are read as their types and a value that does not
-- parse fails the read. Local commands (OPC UA writes at a site) were
-- stored with an empty payload and empty warnings: give them the empty
-- document and the empty list they mean.
UPDATE commands SET payload = '{}' WHERE payload = '';
UPDATE commands SET warnings = '[]' WHERE warnings = '';
