package e2e

// Unknown events (issue 8, point 4): an event this build cannot decode holds
// its server tree, never anything else, and a build that knows it releases it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
)

// heldPublish publishes body on subject exactly as a writer would (raw, with
// a message id) and returns its stream sequence.
func heldPublish(tb testing.TB, js jetstream.JetStream, subject string, body []byte) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, subject, body, jetstream.WithMsgID(ulid.Make().String()))
	if err != nil {
		tb.Fatal(err)
	}
	return ack.Sequence
}

// heldEvent encodes an event of this build for a raw publish.
func heldEvent(tb testing.TB, server, aggregate string, e events.Event) (string, []byte) {
	tb.Helper()
	m := events.Meta{ID: ulid.Make().String(), AggregateID: aggregate, ServerID: server,
		Owner: events.Owner{Account: "acct_a"}, OccurredAt: events.NewTime(time.Now())}
	body, err := events.Marshal(m, e)
	if err != nil {
		tb.Fatal(err)
	}
	return events.SubjectOf(events.Record{Meta: m, Event: e}), body
}

// heldFuture is an event of a newer build: mcp.credential.created at
// version 9 (the auth type moved to "kind").
func heldFuture(server, cred string) (string, []byte) {
	return events.CredentialSubject(server, cred), []byte(fmt.Sprintf(
		`{"id":%q,"type":"mcp.credential.created","version":9,"aggregate_id":%q,"server_id":%q,`+
			`"owner":{"account":"acct_a"},"occurred_at":%q,"data":{"kind":"none","name":"from v9","header_names":[]}}`,
		ulid.Make().String(), cred, server, events.NewTime(time.Now()).String()))
}

// heldNewerBuild registers what a newer build knows: mcp.credential.created
// v9, upcast to the current shape.
func heldNewerBuild() (restore func()) {
	return events.RegisterDecoder(events.TypeCredentialCreated, func(version int, data []byte) (events.Event, error) {
		switch version {
		case 1:
			var e events.CredentialCreated
			err := json.Unmarshal(data, &e)
			return e, err
		case 9:
			var v9 struct {
				Kind        string   `json:"kind"`
				Name        *string  `json:"name"`
				HeaderNames []string `json:"header_names"`
			}
			err := json.Unmarshal(data, &v9)
			return events.CredentialCreated{AuthType: v9.Kind, Name: v9.Name, HeaderNames: v9.HeaderNames}, err
		}
		return nil, errors.New("unsupported version")
	})
}

// heldMetric returns the value of an unlabelled metric on /metrics.
func heldMetric(tb testing.TB, env *vaulttest.Env, name string) string {
	tb.Helper()
	r := env.Do(tb, vaulttest.Request{Method: "GET", Path: "!/metrics", Key: "-"})
	for _, l := range strings.Split(string(r.Body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	tb.Fatalf("no metric %s on /metrics (%d)", name, r.Status)
	return ""
}

func heldReady(tb testing.TB, env *vaulttest.Env) (int, string, map[string]any) {
	tb.Helper()
	// The operator's readiness (counts included; the public /readyz has
	// the status and the reasons only).
	r := env.Do(tb, vaulttest.Request{Method: "GET", Path: "!/readyz/detail", Key: "-"})
	return r.Status, string(r.Body), r.JSON(tb)
}

// A future event (mcp.credential.created v9) written to the stream holds its
// server in the read model: reads of that server answer 503 aggregate_held
// naming the event and its sequence, later events of the server (a raw
// revoke, a create through the API) are kept, every
// other server keeps being projected, /readyz stays 200 and names the hold,
// the metric counts it; a projector restarted with a build that knows the
// event applies the kept events in order, with no manual step. An unknown
// type (mcp.server.renamed) stays held by that build.
func TestFutureEventHoldsOnlyItsServer(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	js := vaulttest.MustJetStream(t, env.NATSURL())
	held := env.MustCreateServer(t, "", nil)
	renamed := env.MustCreateServer(t, "", nil)
	other := env.MustCreateServer(t, "", nil)
	c1 := env.MustCreateCredential(t, "", held, map[string]any{"bearer_token": "tok-held-0123456789"})["id"].(string)
	lcWaitCaughtUp(t, env, env.ReadModel)

	c2 := domain.CredentialID(ulid.Make())
	subj, body := heldFuture(held, c2)
	futureSeq := heldPublish(t, js, subj, body)
	subj, body = heldEvent(t, held, c1, events.CredentialRevoked{}) // kept while held
	revokeSeq := heldPublish(t, js, subj, body)
	renameSeq := heldPublish(t, js, events.ServerSubject(renamed), []byte(fmt.Sprintf(
		`{"id":%q,"type":"mcp.server.renamed","version":1,"aggregate_id":%q,"server_id":%q,"owner":{"account":"acct_a"},`+
			`"occurred_at":%q,"data":{"name":"renamed"}}`, ulid.Make().String(), renamed, renamed, events.NewTime(time.Now()).String())))

	// Other servers keep being projected, through the API.
	c3 := env.MustCreateCredential(t, "", other, map[string]any{"bearer_token": "tok-other-0123456789"})["id"].(string)
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + other + "/credentials/" + c3}); r.Status != http.StatusOK {
		t.Fatalf("credential of another server after the future event: %d %s", r.Status, r.Body)
	}
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + other, Body: map[string]any{"name": "still writable"}}); r.Status != http.StatusOK {
		t.Fatalf("update of another server: %d %s", r.Status, r.Body)
	}

	// The command side decides on the server's own subject, which this
	// build reads: a credential created under the held server meanwhile is
	// stored, and the projector keeps it with the held server's events.
	later := env.MustCreateCredential(t, "", held, map[string]any{"bearer_token": "tok-held-later-0123456789"})["id"].(string)
	lcWaitCaughtUp(t, env, env.ReadModel)

	// Reads of the held server say why.
	for _, req := range []vaulttest.Request{
		{Method: "GET", Path: "/servers/" + held},
		{Method: "GET", Path: "/servers/" + held + "/credentials"},
		{Method: "GET", Path: "/servers/" + held + "/credentials/" + c1},
		{Method: "GET", Path: "/servers/" + held + "/credentials/" + later},
	} {
		r := env.Do(t, req)
		e, _ := r.JSON(t)["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if r.Status != http.StatusServiceUnavailable || e["code"] != "aggregate_held" || e["type"] != "service_unavailable_error" ||
			!strings.Contains(msg, "mcp.credential.created") || !strings.Contains(msg, "version 9") ||
			!strings.Contains(msg, fmt.Sprintf("sequence %d", futureSeq)) {
			t.Fatalf("%s %s of the held server: %d %s", req.Method, req.Path, r.Status, r.Body)
		}
	}
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + renamed}); r.Status != http.StatusServiceUnavailable ||
		!strings.Contains(string(r.Body), "mcp.server.renamed") {
		t.Fatalf("server with an unknown event type: %d %s", r.Status, r.Body)
	}
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + held, Key: vaulttest.KeyB}); r.Status != http.StatusNotFound {
		t.Fatalf("another account reading the held server: %d %s", r.Status, r.Body)
	}
	status, raw, ready := heldReady(t, env)
	if status != http.StatusOK || ready["status"] != "ready" || !strings.Contains(raw, held) ||
		!strings.Contains(raw, fmt.Sprintf("sequence %d", futureSeq)) || !strings.Contains(raw, renamed) {
		t.Fatalf("/readyz with held servers: %d %s", status, raw)
	}
	if v := heldMetric(t, env, "vault_projector_held_aggregates"); v != "2" {
		t.Fatalf("vault_projector_held_aggregates %s, want 2", v)
	}
	t.Logf("held at %d (kept revoke at %d, unknown type at %d); /readyz 200: %s", futureSeq, revokeSeq, renameSeq, raw)

	// Upgrade: the projector restarts with a build that knows v9.
	env.StopProjector()
	restore := heldNewerBuild()
	defer restore()
	env.StartProjector()
	var r vaulttest.Response
	vaulttest.Eventually(t, 20*time.Second, func() bool {
		r = env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + held})
		return r.Status == http.StatusOK
	})
	got := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + held + "/credentials/" + c2})
	if got.Status != http.StatusOK || got.JSON(t)["auth_type"] != "none" || got.JSON(t)["name"] != "from v9" {
		t.Fatalf("the upcast credential after the upgrade: %d %s", got.Status, got.Body)
	}
	got = env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + held + "/credentials/" + c1})
	if got.Status != http.StatusOK || got.JSON(t)["revoked_at"] == nil {
		t.Fatalf("the kept revoke after the upgrade: %d %s", got.Status, got.Body)
	}
	got = env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + held + "/credentials/" + later})
	if got.Status != http.StatusOK || got.JSON(t)["revoked_at"] != nil {
		t.Fatalf("the credential created while held, after the upgrade: %d %s", got.Status, got.Body)
	}
	// The kept revoke destroys the key (the raw publish bypassed the API).
	vaulttest.Eventually(t, 20*time.Second, func() bool {
		_, ok := shredGetKey(t, env, js, c1)
		return !ok
	})
	if v := heldMetric(t, env, "vault_projector_held_aggregates"); v != "1" {
		t.Fatalf("vault_projector_held_aggregates after the upgrade %s, want 1 (mcp.server.renamed)", v)
	}
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + renamed}); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("server with an unknown type after the upgrade: %d %s", r.Status, r.Body)
	}
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + held, Body: map[string]any{"name": "writable again"}}); r.Status != http.StatusOK {
		t.Fatalf("write to the released server: %d %s", r.Status, r.Body)
	}
	status, raw, _ = heldReady(t, env)
	if status != http.StatusOK || strings.Contains(raw, held) || !strings.Contains(raw, renamed) {
		t.Fatalf("/readyz after the upgrade: %d %s", status, raw)
	}
}

// Reads remember that nothing is held (no query per read while none is),
// but a hold applied after that is answered at the very next read.
func TestHoldSeenByTheNextRead(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	js := vaulttest.MustJetStream(t, env.NATSURL())
	srv := env.MustCreateServer(t, "", nil)
	c1 := env.MustCreateCredential(t, "", srv, map[string]any{"bearer_token": "tok-next-read-0123456789"})["id"].(string)
	path := "/servers/" + srv + "/credentials/" + c1
	for range 3 { // the "none held" answer is cached by these
		if r := env.Do(t, vaulttest.Request{Method: "GET", Path: path}); r.Status != http.StatusOK {
			t.Fatalf("read before the hold: %d %s", r.Status, r.Body)
		}
	}
	subj, body := heldFuture(srv, domain.CredentialID(ulid.Make()))
	heldPublish(t, js, subj, body)
	r := env.Do(t, vaulttest.Request{Method: "GET", Path: path})
	if e, _ := r.JSON(t)["error"].(map[string]any); r.Status != http.StatusServiceUnavailable || e["code"] != "aggregate_held" {
		t.Fatalf("the read after the hold: %d %s", r.Status, r.Body)
	}
}
