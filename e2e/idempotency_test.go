package e2e

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/internal/vaulttest"
)

// streamCount returns how many events the stream holds on subject filter.
func streamCount(tb testing.TB, env *vaulttest.Env, filter string) int {
	tb.Helper()
	s, err := vaulttest.MustJetStream(tb, env.NATSURL()).Stream(context.Background(), env.Stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(filter))
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

func TestIdempotencyKey(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	srv := map[string]any{"name": "Linear", "server_label": "linear", "server_url": "https://mcp.linear.app/mcp"}
	post := func(key, user string, body any) vaulttest.Response {
		return env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", Body: body, User: user,
			Header: map[string]string{"Idempotency-Key": key}})
	}
	first := post("k1", "", srv)
	if first.Status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	again := post("k1", "", srv)
	if again.Status != first.Status || !bytes.Equal(again.Body, first.Body) {
		t.Fatalf("replay differs: %d %s vs %d %s", again.Status, again.Body, first.Status, first.Body)
	}
	if n := streamCount(t, env, "vault.*.server"); n != 1 {
		t.Fatalf("replay stored something new: %d server events", n)
	}
	other := post("k1", "", map[string]any{"name": "Other", "server_label": "linear", "server_url": "https://mcp.linear.app/mcp"})
	if other.Status != http.StatusUnprocessableEntity || other.JSON(t)["error"].(map[string]any)["code"] != "idempotency_key_reused" {
		t.Fatalf("different body under the same key: %d %s", other.Status, other.Body)
	}
	// Another end user's identical key is independent.
	bob := post("k1", "bob", srv)
	if bob.Status != http.StatusCreated || bytes.Equal(bob.Body, first.Body) {
		t.Fatalf("bob's key must be independent: %d %s", bob.Status, bob.Body)
	}
	// A 4xx answer is remembered too; a bad key is a 400.
	if r := post(string(bytes.Repeat([]byte("k"), 256)), "", srv); r.Status != http.StatusBadRequest {
		t.Fatalf("256-char Idempotency-Key: %d", r.Status)
	}
	if n := streamCount(t, env, "vault.*.server"); n != 2 {
		t.Fatalf("want 2 server events, got %d", n)
	}
}

// Concurrent requests with one key: exactly one runs, the others get the
// same answer or 409 while it is in flight; one event is stored.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	sid := env.MustCreateServer(t, "", nil)
	body := map[string]any{"bearer_token": "tok-concurrent-123456"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	bodies := map[string]bool{}
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/credentials", Body: body,
				Header: map[string]string{"Idempotency-Key": "same"}})
			mu.Lock()
			defer mu.Unlock()
			statuses[r.Status]++
			if r.Status == http.StatusCreated {
				bodies[string(r.Body)] = true
			}
		}()
	}
	wg.Wait()
	if statuses[http.StatusCreated] < 1 || statuses[http.StatusCreated]+statuses[http.StatusConflict] != 20 || len(bodies) != 1 {
		t.Fatalf("statuses %v, %d distinct 201 bodies", statuses, len(bodies))
	}
	if n := streamCount(t, env, "vault.*.credential.>"); n != 1 {
		t.Fatalf("want exactly 1 credential event, got %d", n)
	}
}
