-- Reads (issue 11): the read model's instance id, and an index that keeps
-- every list and lookup flat on servers with many revoked credentials.
--
-- Named to sort right after 0003_projector.sql (migrations are applied by
-- their count in sorted order): read models made by a build with 0001 and
-- 0003_projector only have user_version 2 and take this one next. A file
-- made by a build that had 0004 but not this one counts 3 and would re-run
-- 0004: rebuild such a read model (it is a cache of the stream).

-- A random id set when the file is created (0003_projector makes it too).
-- The projector announces what it has applied on
-- vaultapplied.<stream>.<instance_id>; an API reading the same file listens
-- there, so the two agree without configuration. It is kept out of
-- projector_state so two read models with the same events compare equal row
-- for row; a rebuild's swap keeps the live file's id.
CREATE TABLE IF NOT EXISTS read_model_instance (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id TEXT NOT NULL
);
INSERT OR IGNORE INTO read_model_instance (id, instance_id) VALUES (1, lower(hex(randomblob(16))));

-- Credentials that are not revoked, newest first per server: the list with
-- include_revoked=false and the newest-usable lookup walk only these rows.
CREATE INDEX IF NOT EXISTS credentials_live_by_server ON credentials (server_id, id) WHERE revoked_at IS NULL;
