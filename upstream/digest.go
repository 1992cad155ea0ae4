package upstream

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ToolHash is the hex SHA-256 of a tool's name, description and input
// schema, the three things an agent relies on when it decides to call it.
// The schema is re-encoded through encoding/json, which orders object keys,
// so the same schema always hashes the same however the server spelled it.
func ToolHash(t *mcp.Tool) string {
	var schema any = t.InputSchema
	if raw, err := json.Marshal(t.InputSchema); err == nil {
		var canon any
		if json.Unmarshal(raw, &canon) == nil {
			schema = canon
		}
	}
	b, _ := json.Marshal(struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		InputSchema any    `json:"input_schema"`
	}{t.Name, t.Description, schema})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
