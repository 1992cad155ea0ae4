package httpapi

import (
	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// serverJSON is the mcp.server object.
type serverJSON struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Name              string            `json:"name"`
	ServerLabel       string            `json:"server_label"`
	ServerURL         string            `json:"server_url"`
	ServerDescription *string           `json:"server_description"`
	AllowedTools      []string          `json:"allowed_tools"`
	RequireApproval   string            `json:"require_approval"`
	Metadata          map[string]string `json:"metadata"`
	CreatedAt         string            `json:"created_at"` // events.Time layout (see credentialJSON)
	UpdatedAt         string            `json:"updated_at"`
	// ToolsChangedAt is when the vault last saw the server's tools drift
	// from the inventory it had recorded (null: never); docs/api.md.
	ToolsChangedAt *string `json:"tools_changed_at"`
}

func renderServer(s domain.Server) serverJSON {
	md := s.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return serverJSON{ID: s.ID, Object: "mcp.server", Name: s.Name, ServerLabel: s.ServerLabel,
		ServerURL: s.ServerURL, ServerDescription: s.ServerDescription, AllowedTools: s.AllowedTools,
		RequireApproval: s.RequireApproval, Metadata: md, CreatedAt: s.CreatedAt.String(), UpdatedAt: s.UpdatedAt.String(),
		ToolsChangedAt: timeString(s.ToolsChangedAt)}
}

// credentialJSON is the mcp.credential object: exactly the seed's fields.
type credentialJSON struct {
	ID                   string   `json:"id"`
	Object               string   `json:"object"`
	ServerID             string   `json:"server_id"`
	Name                 *string  `json:"name"`
	AuthType             string   `json:"auth_type"`
	AuthorizationPreview *string  `json:"authorization_preview"`
	HeaderNames          []string `json:"header_names"`
	// Times are formatted here (events.Time layout): a string encodes
	// several times faster than a json.Marshaler, whose output is re-parsed.
	ExpiresAt  *string `json:"expires_at"`
	LastUsedAt *string `json:"last_used_at"`
	CreatedAt  string  `json:"created_at"`
	UpdatedAt  string  `json:"updated_at"`
	RevokedAt  *string `json:"revoked_at"`
}

// timeString formats an optional time as its JSON string (nil = null).
func timeString(t *events.Time) *string {
	if t == nil {
		return nil
	}
	s := t.String()
	return &s
}

func renderCredential(c domain.Credential) credentialJSON {
	names := c.HeaderNames
	if names == nil {
		names = []string{}
	}
	return credentialJSON{ID: c.ID, Object: "mcp.credential", ServerID: c.ServerID, Name: c.Name,
		AuthType: c.AuthType, AuthorizationPreview: c.AuthorizationPreview, HeaderNames: names,
		ExpiresAt: timeString(c.ExpiresAt), LastUsedAt: timeString(c.LastUsedAt), CreatedAt: c.CreatedAt.String(),
		UpdatedAt: c.UpdatedAt.String(), RevokedAt: timeString(c.RevokedAt)}
}

// listJSON is a page of a list.
type listJSON[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

func renderList[S any, T any](items []S, more bool, render func(S) T, id func(S) string) listJSON[T] {
	out := listJSON[T]{Object: "list", Data: make([]T, 0, len(items)), HasMore: more}
	for _, it := range items {
		out.Data = append(out.Data, render(it))
	}
	if len(items) > 0 {
		first, last := id(items[0]), id(items[len(items)-1])
		out.FirstID, out.LastID = &first, &last
	}
	return out
}

type deletedJSON struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

// testJSON is the mcp.server.test answer.
type testJSON struct {
	ServerID  string     `json:"server_id"`
	Object    string     `json:"object"`
	Connected bool       `json:"connected"`
	ToolCount int        `json:"tool_count"`
	ToolNames []string   `json:"tool_names"`
	Error     *testError `json:"error,omitempty"`
}

type testError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func renderTest(serverID string, r app.TestResult) testJSON {
	names := r.ToolNames
	if names == nil || !r.Connected {
		names = []string{}
	}
	out := testJSON{ServerID: serverID, Object: "mcp.server.test", Connected: r.Connected,
		ToolCount: len(names), ToolNames: names}
	if !r.Connected {
		out.Error = &testError{Code: r.ErrorCode, Message: r.ErrorMsg}
	}
	return out
}
