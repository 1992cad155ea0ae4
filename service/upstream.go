package service

import (
	"context"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/upstream"
)

// upstreamTester adapts the upstream MCP client to the application layer.
type upstreamTester struct{ t *upstream.Tester }

// newUpstreamTester returns the MCP client that testServer uses.
func newUpstreamTester(allowPrivate bool) app.Tester {
	return upstreamTester{t: &upstream.Tester{AllowPrivate: allowPrivate, UserAgent: "mcp-vault/1"}}
}

func (u upstreamTester) Test(ctx context.Context, serverURL string, c domain.Credential, s domain.Secret, allowed []string) app.TestResult {
	auth := upstream.Auth{Type: upstream.AuthNone}
	if c.ID != "" {
		auth = upstream.Auth{Type: c.AuthType, BearerToken: s.BearerToken, Authorization: s.Authorization, Headers: s.Headers}
	}
	r := u.t.Test(ctx, serverURL, auth, allowed)
	out := app.TestResult{Connected: r.Connected, ToolNames: r.ToolNames, TargetHost: r.TargetHost, Sent: r.CredentialSent,
		Tools: r.Tools}
	if r.Error != nil {
		out.ErrorCode, out.ErrorMsg = r.Error.Code, r.Error.Message
	}
	return out
}
