-- proxy branch (issue 12): when the vault last saw the server's tools drift.
ALTER TABLE servers ADD COLUMN tools_changed_at TEXT;
