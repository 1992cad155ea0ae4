-- Audit branch (issue 13): the expiry scheduler scans credentials by expires_at.
CREATE INDEX credentials_by_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL AND revoked_at IS NULL;
-- Which expiry notices the stream holds per credential (0 none, 1 expiring_soon, 2 expired).
-- Its own table: the credentials row is rewritten by INSERT OR REPLACE on every change.
CREATE TABLE credential_expiry (
    id     TEXT PRIMARY KEY,
    notice INTEGER NOT NULL
);
