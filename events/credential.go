package events

// Wire names of the credential events.
const (
	TypeCredentialCreated = "mcp.credential.created"
	TypeCredentialRevoked = "mcp.credential.revoked"
	TypeCredentialDeleted = "mcp.credential.deleted"
	TypeCredentialUsed    = "mcp.credential.used"
)

// Sealed is a secret encrypted with AES-256-GCM under the credential's data
// key. The data key is not here: it is kept, wrapped, outside the stream.
type Sealed struct {
	Alg        string `json:"alg"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// CredentialCreated records a new credential. The secret is sealed; only the
// preview (last four characters at most) and the header names are in clear.
type CredentialCreated struct {
	Name                 *string  `json:"name"`
	AuthType             string   `json:"auth_type"`
	AuthorizationPreview *string  `json:"authorization_preview"`
	HeaderNames          []string `json:"header_names"`
	ExpiresAt            *Time    `json:"expires_at"`
	Secret               *Sealed  `json:"secret"`
}

// CredentialRevoked records a revoke; revoked_at is the envelope's occurred_at.
type CredentialRevoked struct{}

// CredentialDeleted records a deletion.
type CredentialDeleted struct{}

// CredentialUsed records one use of a credential by the vault: testServer
// ("test"), or the MCP endpoint ("initialize" and "tools/list" once per
// session, "tools/call" every time). It carries no secret, and never a
// tool's arguments or result.
type CredentialUsed struct {
	Operation  string `json:"operation"`
	Outcome    string `json:"outcome"`
	ErrorCode  string `json:"error_code,omitempty"`
	ToolCount  int    `json:"tool_count"`
	TargetHost string `json:"target_host"`
	// ToolName is the tool of a "tools/call".
	ToolName string `json:"tool_name,omitempty"`
	// LatencyMS is the upstream round trip of a "tools/call", in milliseconds.
	LatencyMS float64 `json:"latency_ms,omitempty"`
}

// EventType implements Event.
func (CredentialCreated) EventType() string { return TypeCredentialCreated }

// EventType implements Event.
func (CredentialRevoked) EventType() string { return TypeCredentialRevoked }

// EventType implements Event.
func (CredentialDeleted) EventType() string { return TypeCredentialDeleted }

// EventType implements Event.
func (CredentialUsed) EventType() string { return TypeCredentialUsed }

// SchemaVersion implements Event.
func (CredentialCreated) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (CredentialRevoked) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (CredentialDeleted) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (CredentialUsed) SchemaVersion() int { return 1 }
