package service

import (
	"context"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
)

// newUpstreamTester returns the MCP client that testServer uses.
func newUpstreamTester(allowPrivate bool) app.Tester {
	return unavailableTester{}
}

type unavailableTester struct{}

func (unavailableTester) Test(ctx context.Context, serverURL string, c domain.Credential, s domain.Secret, allowed []string) app.TestResult {
	return app.TestResult{ErrorCode: "not_implemented", ErrorMsg: "testServer is not available yet."}
}
