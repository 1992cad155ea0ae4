package app

import (
	"context"

	"github.com/mcpvault/vault/domain"
)

// Tester connects to an MCP server with a secret and lists its tools.
type Tester interface {
	Test(ctx context.Context, serverURL string, c domain.Credential, s domain.Secret, allowedTools []string) TestResult
}

// TestResult is the answer of testServer.
type TestResult struct {
	Connected  bool
	ToolNames  []string
	ErrorCode  string
	ErrorMsg   string
	TargetHost string
	Sent       bool   // the credential was sent to the server
	Seq        uint64 // the stream sequence of the recorded use, if any
	// Tools is the server's whole inventory (tool name to a hash of its
	// name, description and input schema), for drift detection; nil when
	// unknown.
	Tools map[string]string
}
