package events

import (
	"encoding/json"
	"fmt"
)

// Wire names of the credential events.
const (
	TypeCredentialCreated = "mcp.credential.created"
	TypeCredentialRevoked = "mcp.credential.revoked"
	TypeCredentialDeleted = "mcp.credential.deleted"
	TypeCredentialUsed    = "mcp.credential.used"
)

// Sealed is a secret encrypted with AES-256-GCM under the credential's data
// key. The data key is not here: it is kept, wrapped, outside the stream.
//
// DEKWrappedBy (version 2 of mcp.credential.created) is the id of the key
// that wrapped the data key when the secret was sealed: "owner:<owner key
// id>" (the end user's key) or, for data keys wrapped directly, a master key
// id of VAULT_MASTER_KEYS. It lets an auditor tell from the stream alone
// which key protects each secret: after mcp.owner.erased names an owner key,
// every secret naming it is unrecoverable. It is empty in events upcast from
// version 1, which did not record it.
type Sealed struct {
	Alg          string `json:"alg"`
	Nonce        []byte `json:"nonce"`
	Ciphertext   []byte `json:"ciphertext"`
	DEKWrappedBy string `json:"dek_wrapped_by,omitempty"`
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

// SchemaVersion implements Event. Version 2 added secret.dek_wrapped_by,
// required whenever there is a secret; version 1 data is upcast by
// decodeCredentialCreated.
func (CredentialCreated) SchemaVersion() int { return 2 }

// SchemaVersion implements Event.
func (CredentialRevoked) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (CredentialDeleted) SchemaVersion() int { return 1 }

// SchemaVersion implements Event.
func (CredentialUsed) SchemaVersion() int { return 1 }

// decodeCredentialCreated decodes every stored version of
// mcp.credential.created into the current shape. Version 1 did not record
// which key wrapped the data key: the upcast leaves DEKWrappedBy empty
// ("not recorded"), which the fold and the read model ignore, so a stream of
// version 1 events replays to the same read model.
func decodeCredentialCreated(version int, data []byte) (Event, error) {
	var e CredentialCreated
	switch version {
	case 1, 2:
	default:
		return nil, fmt.Errorf("unsupported version")
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, err
	}
	if version == 1 && e.Secret != nil {
		e.Secret.DEKWrappedBy = ""
	}
	return e, nil
}
