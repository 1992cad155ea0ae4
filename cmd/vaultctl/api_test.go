package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/seal"
)

// TestListAndTestThroughTheAPI: servers and credentials list what the
// owner sees (paging through more than one page), test reports a failed
// connection with exit 1.
func TestListAndTestThroughTheAPI(t *testing.T) {
	env := vaultEnv(t, seal.NewKeySpec("k1"))
	t.Setenv("VAULT_API_KEYS", "acct_a:"+vaulttest.KeyA+",acct_b:"+vaulttest.KeyB)
	t.Setenv("VAULT_API_URL", env.URL)
	var srv string
	for i := 0; i < 105; i++ {
		srv = env.MustCreateServer(t, "alice", nil)
	}
	env.MustCreateServer(t, "bob", nil)
	env.MustCreateCredential(t, "alice", srv, map[string]any{"name": "tok", "bearer_token": "secret-token-123456"})

	code, out, errs := vaultctl(t, "--json", "servers", "--account", "acct_a", "--user", "alice")
	var rows []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 105 {
		t.Fatalf("servers: %d %d rows %s", code, len(rows), errs)
	}
	code, out, _ = vaultctl(t, "servers", "--account", "acct_b", "--user", "alice")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "ID") {
		t.Fatalf("another account's view: %d %q", code, out)
	}
	code, out, _ = vaultctl(t, "credentials", srv, "--account", "acct_a", "--user", "alice")
	if code != 0 || !strings.Contains(out, "tok") || !strings.Contains(out, "****...3456") || strings.Contains(out, "secret-token") {
		t.Fatalf("credentials: %d %q", code, out)
	}
	code, out, _ = vaultctl(t, "test", srv, "--account", "acct_a", "--user", "alice")
	if code != exitProblem || !strings.HasPrefix(out, "not connected") {
		t.Fatalf("test of an unreachable server: %d %q", code, out)
	}
	if code, _, _ := vaultctl(t, "servers", "--account", "acct_zz"); code != exitUsage {
		t.Fatalf("unknown account: %d", code)
	}
}

// TestEraseFromTheCLI: vaultctl erase works on the stream directly; the
// user's servers answer 404 afterwards, other users keep theirs.
func TestEraseFromTheCLI(t *testing.T) {
	env := vaultEnv(t, seal.NewKeySpec("k1"))
	gone := env.MustCreateServer(t, "carol", nil)
	env.MustCreateCredential(t, "carol", gone, map[string]any{"bearer_token": "secret-token-123456"})
	kept := env.MustCreateServer(t, "dave", nil)
	if code, _, _ := vaultctl(t, "erase", "--account", "acct_a"); code != exitUsage {
		t.Fatalf("erase without --user: %d", code)
	}
	code, out, errs := vaultctl(t, "--json", "erase", "--account", "acct_a", "--user", "carol")
	var res struct {
		Deleted []string `json:"deleted_server_ids"`
		Seq     uint64   `json:"event_seq"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res.Deleted) != 1 || res.Deleted[0] != gone || res.Seq == 0 {
		t.Fatalf("erase: %d %q %s", code, out, errs)
	}
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + gone, User: "carol"}); r.Status != 404 {
		t.Fatalf("erased user's server: %d", r.Status)
	}
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + kept, User: "dave"}); r.Status != 200 {
		t.Fatalf("other user's server: %d", r.Status)
	}
}
