-- Audit branch (issue 13): the expiry scheduler scans credentials by expires_at.
CREATE INDEX credentials_by_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL AND revoked_at IS NULL;
