package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func newProxyClient() *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
}

// The proxy's sessions go through the same SSRF guard as testServer.
func TestDialRefusesPrivateDestinations(t *testing.T) {
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer srv.Close()
	d := &Dialer{}
	_, fail := d.Dial(context.Background(), srv.URL+"/mcp", Auth{Type: AuthBearer, BearerToken: "dial-secret-123"}, newProxyClient())
	if fail == nil || fail.Code != CodeDestinationBlocked {
		t.Fatalf("dial to loopback: %+v", fail)
	}
	if hits != 0 {
		t.Fatalf("the blocked destination was contacted %d times", hits)
	}
	if strings.Contains(fail.Message, "dial-secret-123") {
		t.Fatal("secret in the error")
	}
	for _, bad := range []string{"ftp://example.com/mcp", "http://user:pw@169.254.169.254/mcp", "http://[::1]:80/"} {
		if _, fail := d.Dial(context.Background(), bad, Auth{}, newProxyClient()); fail == nil {
			t.Fatalf("dial %q succeeded", bad)
		}
	}
}

// Every value a credential sends is redacted from what goes back to the agent.
func TestSessionScrubsSecrets(t *testing.T) {
	s := &Session{secrets: secretsOf(Auth{Type: AuthHeaders, Headers: map[string]string{"X-Key": "k-0123456789", "X-Id": "abc"}})}
	got := s.Scrub("upstream said: bad key k-0123456789 for abc")
	if strings.Contains(got, "k-0123456789") || !strings.Contains(got, Redacted) {
		t.Fatalf("scrubbed %q", got)
	}
	if !strings.Contains(got, "abc") {
		t.Fatalf("a 3-byte value is too common to redact, got %q", got)
	}
	s = &Session{secrets: secretsOf(Auth{Type: AuthAuthorization, Authorization: "Token tok-987654321"}), att: &attempt{probe: &probe{target: "h"}, testCtx: context.Background()}}
	e := s.CallError(context.Background(), &jsonrpc.Error{Code: -32000, Message: "invalid Token tok-987654321"})
	if e.Code != -32000 || strings.Contains(e.Message, "tok-987654321") {
		t.Fatalf("upstream JSON-RPC error relayed as %+v", e)
	}
	e = s.CallError(context.Background(), errors.New("Post \"http://h/mcp?token=tok-987654321\": EOF"))
	if e.Code != CodeRPCUpstream || strings.Contains(e.Message, "tok-987654321") || strings.Contains(e.Message, "Post") {
		t.Fatalf("transport error relayed as %+v", e)
	}
	if b, found := s.ScrubBytes([]byte(`{"text":"Token tok-987654321"}`)); !found || strings.Contains(string(b), "tok-987654321") {
		t.Fatalf("ScrubBytes %s %v", b, found)
	}
}
