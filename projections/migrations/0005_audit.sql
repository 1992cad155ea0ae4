-- Audit branch (issue 13): the expiry scheduler scans credentials by expires_at.
CREATE INDEX credentials_by_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL AND revoked_at IS NULL;
-- Which expiry notices the stream holds per credential (0 none, 1 expiring_soon, 2 expired).
-- Its own table: the credentials row is rewritten by INSERT OR REPLACE on every change.
CREATE TABLE credential_expiry (
    id     TEXT PRIMARY KEY,
    notice INTEGER NOT NULL
);
-- Tamper evidence: the headers (audit signature) of events kept while their tree is held, and the
-- operators' rejections of events that do not verify (mcp.audit.rejected), which release a hold.
ALTER TABLE held_events ADD COLUMN header BLOB;
CREATE TABLE audit_rejections (
    seq         INTEGER PRIMARY KEY,
    body_sha256 TEXT NOT NULL
);
-- The chain head of each subject (audit.Head of its last message), for verifying chain links.
CREATE TABLE audit_heads (
    subject TEXT PRIMARY KEY,
    head    TEXT NOT NULL
);
-- Events held because their signature or chain link did not verify: never applied unless rejected.
CREATE TABLE audit_breaks (
    seq     INTEGER PRIMARY KEY,
    problem TEXT NOT NULL
);
