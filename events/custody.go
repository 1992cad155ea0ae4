package events

// Wire names of the key custody events.
const (
	TypeKeysRewrapped = "mcp.keys.rewrapped"
	TypeOwnerErased   = "mcp.owner.erased"
)

// KeyringAggregate is the aggregate id of events about the master keyring.
const KeyringAggregate = "mcp_keyring"

// KeysSubject is the subject of key rotation records.
const KeysSubject = SubjectPrefix + "keys.rotations"

// OwnerSubject is the subject of an owner key's events.
func OwnerSubject(ownerKeyID string) string { return SubjectPrefix + "owner." + ownerKeyID }

// KeysRewrapped records a master key rotation (`vaultctl keys rotate`): the
// stored keys wrapped by an older master key were re-wrapped under MasterKID.
// It names key ids and counts, never key material.
type KeysRewrapped struct {
	// MasterKID is the master key that wraps every re-wrapped key now.
	MasterKID string `json:"master_kid"`
	// OwnerKeys and DataKeys count the keys re-wrapped by this run.
	OwnerKeys int `json:"owner_keys"`
	DataKeys  int `json:"data_keys"`
	// AlreadyCurrent counts keys that were already wrapped by MasterKID (a
	// resumed or repeated rotation).
	AlreadyCurrent int `json:"already_current"`
	// RetiredKIDs lists the master keys no stored key depends on any more:
	// they can be removed from VAULT_MASTER_KEYS.
	RetiredKIDs []string `json:"retired_kids"`
}

// OwnerErased records that an end user was erased: the owner key that wraps
// the data keys of all their credentials was destroyed (so every secret of
// theirs is unrecoverable) and their servers were deleted. The envelope's
// owner is the erased owner (ids only); the aggregate is the owner key.
type OwnerErased struct {
	// OwnerKeyID is the destroyed key: every mcp.credential.created whose
	// secret.dek_wrapped_by is "owner:" + OwnerKeyID is now unreadable.
	OwnerKeyID string `json:"owner_key_id"`
	// ServerIDs are the servers deleted by the erase.
	ServerIDs []string `json:"server_ids"`
}

// EventType implements Event.
func (KeysRewrapped) EventType() string { return TypeKeysRewrapped }

// EventType implements Event.
func (OwnerErased) EventType() string { return TypeOwnerErased }

// SchemaVersion implements Event.
func (KeysRewrapped) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (OwnerErased) SchemaVersion() int { return 1 }
