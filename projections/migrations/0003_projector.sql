-- Projector (issues 8.4, 9.3, 11.1): held aggregates, pending data-key
-- destructions, and the read model's instance id when no earlier migration
-- made it.

-- A server tree (the server and its credentials) the projector holds because
-- this build cannot decode one of its events (a newer type or version, or a
-- malformed body). Reads of it answer 503 aggregate_held until a build that
-- knows the event applies the held events (at start, or by a rebuild).
CREATE TABLE held_aggregates (
    server_id     TEXT PRIMARY KEY,           -- from the event's subject vault.<server_id>.…
    owner         TEXT,                       -- events.Owner.Key() when the envelope says
    seq           INTEGER NOT NULL,           -- the first event not applied
    event_type    TEXT NOT NULL,              -- its type ('' when the envelope is unreadable)
    event_version INTEGER NOT NULL,
    reason        TEXT NOT NULL,              -- why it could not be decoded (no event data)
    held_at       TEXT NOT NULL
);

-- Every event of a held tree from the held one on, as stored in the stream,
-- applied in sequence order once the tree is released.
CREATE TABLE held_events (
    seq       INTEGER PRIMARY KEY,
    server_id TEXT NOT NULL,
    subject   TEXT NOT NULL,
    data      BLOB NOT NULL
);
CREATE INDEX held_events_by_server ON held_events (server_id, seq);

-- Data keys to destroy: written in the transaction that projects the revoke,
-- delete or server delete, removed once the key is gone from the keys stream.
CREATE TABLE pending_shreds (
    credential_id TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,           -- the event that made it due
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);

-- The instance id names the projector's applied notifications
-- (vaultapplied.<stream>.<instance_id>); the reads migration makes it too.
CREATE TABLE IF NOT EXISTS read_model_instance (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id TEXT NOT NULL
);
INSERT OR IGNORE INTO read_model_instance (id, instance_id) VALUES (1, lower(hex(randomblob(16))));
