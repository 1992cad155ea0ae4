package events

// Wire names of the expiry events.
const (
	TypeCredentialExpiringSoon = "mcp.credential.expiring_soon"
	TypeCredentialExpired      = "mcp.credential.expired"
)

// ExpiringSoonSubject and ExpiredSubject hold at most one event each per
// credential: they are appended expecting an empty subject, so JetStream
// itself guarantees "once" even when two schedulers race.
func ExpiringSoonSubject(serverID, credentialID string) string {
	return CredentialSubject(serverID, credentialID) + ".expiring_soon"
}

// ExpiredSubject is where a credential's mcp.credential.expired is stored.
func ExpiredSubject(serverID, credentialID string) string {
	return CredentialSubject(serverID, credentialID) + ".expired"
}

// CredentialExpiringSoon records that a credential will expire within the
// scheduler's lead time, for alerting. It changes no state.
type CredentialExpiringSoon struct {
	ExpiresAt   Time  `json:"expires_at"`
	LeadSeconds int64 `json:"lead_seconds"`
}

// CredentialExpired records that a credential passed its expires_at (the
// vault stopped using it then). It changes no state: expiry is a property of
// expires_at; the event is for audit consumers and alerting.
type CredentialExpired struct {
	ExpiresAt Time `json:"expires_at"`
}

// EventType implements Event.
func (CredentialExpiringSoon) EventType() string { return TypeCredentialExpiringSoon }

// EventType implements Event.
func (CredentialExpired) EventType() string { return TypeCredentialExpired }

// SchemaVersion implements Event.
func (CredentialExpiringSoon) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (CredentialExpired) SchemaVersion() int { return 1 }
