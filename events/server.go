package events

// Wire names of the server events.
const (
	TypeServerCreated = "mcp.server.created"
	TypeServerUpdated = "mcp.server.updated"
	TypeServerDeleted = "mcp.server.deleted"
)

// ServerAttrs are the user-settable attributes of a server.
type ServerAttrs struct {
	Name              string            `json:"name"`
	ServerLabel       string            `json:"server_label"`
	ServerURL         string            `json:"server_url"`
	ServerDescription *string           `json:"server_description"`
	AllowedTools      []string          `json:"allowed_tools"`
	RequireApproval   string            `json:"require_approval"`
	Metadata          map[string]string `json:"metadata"`
}

// ServerCreated records the registration of an MCP server.
type ServerCreated struct {
	ServerAttrs
}

// ServerUpdated records a change to a server. It carries every attribute
// after the change and the names of the fields that changed.
type ServerUpdated struct {
	ChangedFields []string `json:"changed_fields"`
	ServerAttrs
}

// ServerDeleted records the deletion of a server together with the
// credentials that were deleted with it.
type ServerDeleted struct {
	CredentialIDs []string `json:"credential_ids"`
}

// EventType implements Event.
func (ServerCreated) EventType() string { return TypeServerCreated }

// EventType implements Event.
func (ServerUpdated) EventType() string { return TypeServerUpdated }

// EventType implements Event.
func (ServerDeleted) EventType() string { return TypeServerDeleted }

// SchemaVersion implements Event.
func (ServerCreated) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (ServerUpdated) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (ServerDeleted) SchemaVersion() int { return 1 }
