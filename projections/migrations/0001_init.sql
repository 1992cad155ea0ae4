-- Read model of the MCP Vault. Rebuildable from the event stream at any time.
CREATE TABLE servers (
    id                 TEXT PRIMARY KEY,
    owner              TEXT NOT NULL,           -- events.Owner.Key()
    account            TEXT NOT NULL,
    user               TEXT NOT NULL,           -- '' when no X-On-Behalf-Of
    name               TEXT NOT NULL,
    server_label       TEXT NOT NULL,
    server_url         TEXT NOT NULL,
    server_description TEXT,
    allowed_tools      TEXT,                    -- JSON array, NULL = every tool
    require_approval   TEXT NOT NULL,
    metadata           TEXT NOT NULL,           -- JSON object
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    tree_seq           INTEGER NOT NULL         -- last stream sequence under vault.<id>.>
);
CREATE INDEX servers_by_owner ON servers (owner, id);

CREATE TABLE credentials (
    id                    TEXT PRIMARY KEY,
    server_id             TEXT NOT NULL,
    owner                 TEXT NOT NULL,
    account               TEXT NOT NULL,
    user                  TEXT NOT NULL,
    name                  TEXT,
    auth_type             TEXT NOT NULL,
    authorization_preview TEXT,
    header_names          TEXT NOT NULL,        -- JSON array
    expires_at            TEXT,
    last_used_at          TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    revoked_at            TEXT,
    secret                BLOB                  -- JSON of events.Sealed: ciphertext only
);
CREATE INDEX credentials_by_server ON credentials (server_id, id);

CREATE TABLE projector_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
);
INSERT INTO projector_state (id, last_seq) VALUES (1, 0);
