package events

// TypeServerToolsChanged is the wire name of ServerToolsChanged.
const TypeServerToolsChanged = "mcp.server.tools_changed"

// ServerToolsChanged records that the vault saw a server's tool inventory
// differ from the one it recorded last (testServer or the MCP endpoint
// listed the tools). Tools is the whole inventory as now seen — tool name to
// the hex SHA-256 of the tool's name, description and input schema — so the
// last event on the server's tools subject is all the command side needs to
// decide the next one. Added, Removed and Changed name what differs from the
// previous event's inventory; Initial marks the first inventory recorded for
// the server (everything is "added", nothing has drifted yet). No secret, no
// argument and no result is ever in it.
type ServerToolsChanged struct {
	Added   []string          `json:"added"`
	Removed []string          `json:"removed"`
	Changed []string          `json:"changed"`
	Initial bool              `json:"initial"`
	Tools   map[string]string `json:"tools"`
	// Source is what listed the tools: "test" (testServer) or "proxy" (the MCP endpoint).
	Source string `json:"source"`
}

// EventType implements Event.
func (ServerToolsChanged) EventType() string { return TypeServerToolsChanged }

// SchemaVersion implements Event.
func (ServerToolsChanged) SchemaVersion() int { return 1 }

// ToolsSubject is the subject of a server's tool inventory events. Appends
// expect the last sequence of this literal subject (optimistic concurrency).
func ToolsSubject(serverID string) string { return SubjectPrefix + serverID + ".tools" }

// CredentialUsedSubject is the subject of a credential's use events: apart
// from the credential's own subject, so a use never conflicts with a revoke
// or a delete (and is appended without an expected sequence).
func CredentialUsedSubject(serverID, credentialID string) string {
	return CredentialSubject(serverID, credentialID) + ".used"
}
