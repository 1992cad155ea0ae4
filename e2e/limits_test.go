package e2e

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/internal/vaulttest"
)

// lmMustLimitReached fails unless r is 409 conflict_error limit_reached.
func lmMustLimitReached(t *testing.T, r vaulttest.Response) {
	t.Helper()
	e, _ := r.JSON(t)["error"].(map[string]any)
	if r.Status != http.StatusConflict || e["type"] != "conflict_error" || e["code"] != "limit_reached" {
		t.Fatalf("want 409 limit_reached, got %d %s", r.Status, r.Body)
	}
}

// TestOperatorLimits: servers per owner and credentials per server are
// capped when the operator sets them; a delete frees a slot, a revoke does
// not; another owner is not affected and learns nothing.
func TestOperatorLimits(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{Limits: app.Limits{ServersPerOwner: 2, CredentialsPerServer: 2}})
	s1 := env.MustCreateServer(t, "alice", nil)
	env.MustCreateServer(t, "alice", nil)
	body := map[string]any{"name": "x", "server_label": "x", "server_url": "https://example.com/mcp"}
	lmMustLimitReached(t, env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", Body: body, User: "alice"}))
	env.MustCreateServer(t, "bob", nil) // another owner has slots of its own
	if r := env.Do(t, vaulttest.Request{Method: "DELETE", Path: "/servers/" + s1, User: "alice"}); r.Status != http.StatusOK {
		t.Fatalf("delete: %d", r.Status)
	}
	s3 := env.MustCreateServer(t, "alice", nil)
	lmMustLimitReached(t, env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", Body: body, User: "alice"}))

	cred := map[string]any{"bearer_token": "tok-0123456789abcdef"}
	c1 := env.MustCreateCredential(t, "alice", s3, cred)["id"].(string)
	env.MustCreateCredential(t, "alice", s3, cred)
	path := "/servers/" + s3 + "/credentials"
	lmMustLimitReached(t, env.Do(t, vaulttest.Request{Method: "POST", Path: path, Body: cred, User: "alice"}))
	// Another owner naming the full server gets the 404 of an unknown server.
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: path, Body: cred, User: "bob"}); r.Status != http.StatusNotFound {
		t.Fatalf("foreign owner: %d %s", r.Status, r.Body)
	}
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: path + "/" + c1 + "/revoke", User: "alice"}); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d", r.Status)
	}
	lmMustLimitReached(t, env.Do(t, vaulttest.Request{Method: "POST", Path: path, Body: cred, User: "alice"}))
	if r := env.Do(t, vaulttest.Request{Method: "DELETE", Path: path + "/" + c1, User: "alice"}); r.Status != http.StatusOK {
		t.Fatalf("delete credential: %d", r.Status)
	}
	env.MustCreateCredential(t, "alice", s3, cred)
	// A refused create stored nothing.
	list := env.Do(t, vaulttest.Request{Method: "GET", Path: path, User: "alice"})
	if n := len(list.JSON(t)["data"].([]any)); n != 2 {
		t.Fatalf("%d credentials listed, want 2", n)
	}
}

// TestOperatorLimitUnderConcurrency: concurrent creates never pass the cap.
func TestOperatorLimitUnderConcurrency(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{Limits: app.Limits{ServersPerOwner: 3}})
	body := map[string]any{"name": "x", "server_label": "x", "server_url": "https://example.com/mcp"}
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", Body: body, User: "carol"})
			mu.Lock()
			statuses[r.Status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if statuses[http.StatusCreated] != 3 || statuses[http.StatusConflict] != 9 {
		t.Fatalf("statuses %v, want 3×201 and 9×409", statuses)
	}
	list := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers", User: "carol"})
	if n := len(list.JSON(t)["data"].([]any)); n != 3 {
		t.Fatalf("%d servers, want 3", n)
	}
}

// TestOperatorLimitsOffCostNothing: with no cap set (the default) nothing is
// counted: the counters bucket does not even exist.
func TestOperatorLimitsOffCostNothing(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	srv := env.MustCreateServer(t, "", nil)
	env.MustCreateCredential(t, "", srv, map[string]any{"bearer_token": "tok-0123456789abcdef"})
	js := vaulttest.MustJetStream(t, env.NATSURL())
	_, err := js.KeyValue(context.Background(), env.Stream+"_COUNTERS")
	if err != jetstream.ErrBucketNotFound {
		t.Fatalf("counters bucket with limits off: %v", err)
	}
}
