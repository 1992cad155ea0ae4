// Package events defines the MCP Vault event stream: the envelope every
// message carries, the event types with their stable wire names and schema
// versions, and the NATS subjects they are published on.
//
// # Subjects
//
// All events live in one JetStream stream (VAULT_STREAM, default "VAULT")
// whose subjects all start with "vault.":
//
//	vault.<server_id>.server                       server events
//	vault.<server_id>.credential.<credential_id>   credential events
//
// A server and its credentials form one consistency boundary: every write
// is published with an expected last sequence for "vault.<server_id>.>", so
// two concurrent changes under one server can never both be accepted on the
// same state (the loser gets a conflict and is retried or answered 409).
// Audit consumers can follow everything with "vault.>", one server with
// "vault.<server_id>.>", or all credential events with "vault.*.credential.>".
//
// # Envelope
//
// Every message body is one JSON Envelope:
//
//	{"id":"01J…","type":"mcp.credential.created","version":1,
//	 "aggregate_id":"mcp_cred_…","server_id":"mcp_srv_…",
//	 "owner":{"account":"acct_a","user":"user-42"},
//	 "occurred_at":"2026-04-29T12:00:00.000Z","data":{…}}
//
// id is a ULID, unique per event and used as the JetStream message id for
// deduplication; type is the stable wire name; version is the schema version
// of data; owner is the account (never the API key) and the optional
// X-On-Behalf-Of end user; occurred_at is the decision time in milliseconds.
//
// # Versioning
//
// Wire names never change. A field may be added to a type's data without a
// version bump when old readers can ignore it and new readers can default it.
// Any other change bumps the version, and Decode upcasts older versions to the
// current struct, so the fold only ever sees current versions.
//
// # Secrets
//
// No event carries a secret in plaintext. CredentialCreated carries the
// secret sealed with AES-256-GCM under a per-credential data key; the data
// key itself, wrapped by a master key, lives outside this stream and is
// destroyed when the credential is revoked or deleted (crypto-shredding), so
// the ciphertext that stays in the immutable stream becomes unreadable.
package events
