package e2e

// mcp.credential.created version 1 (written before secret.dek_wrapped_by
// existed) in the stream replays to the same read model as before: the
// projector upcasts it, the API answers it like a version 2 credential with
// the same fields, and a rebuild yields the same read model.

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
)

func TestVersion1EventsReplay(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	js := lcJS(t, env.NATSURL())
	srv := env.MustCreateServer(t, "alice", nil)
	owner := events.Owner{Account: "acct_a", User: "alice"}
	at := events.NewTime(time.Now())
	sealed := &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte("0123456789ab"), Ciphertext: []byte("opaque ciphertext+tag")}
	name := "legacy"
	created := func(id string) events.CredentialCreated {
		return events.CredentialCreated{Name: &name, AuthType: "bearer", AuthorizationPreview: func() *string { s := "****...cdef"; return &s }(),
			HeaderNames: []string{}, Secret: sealed}
	}
	// v1: what a vault before version 2 wrote (no dek_wrapped_by, "version":1).
	v1 := "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d01"
	body, err := events.Marshal(events.Meta{ID: "01JSXQ6Z8Y0000000000000101", AggregateID: v1, ServerID: srv, Owner: owner, OccurredAt: at}, created(v1))
	if err != nil {
		t.Fatal(err)
	}
	body = []byte(strings.Replace(string(body), `"version":2`, `"version":1`, 1))
	if strings.Contains(string(body), "dek_wrapped_by") || !strings.Contains(string(body), `"version":1`) {
		t.Fatalf("not a version 1 body: %s", body)
	}
	// v2: the same credential as written today.
	v2 := "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d02"
	c2 := created(v2)
	s2 := *sealed
	s2.DEKWrappedBy = "k1"
	c2.Secret = &s2
	body2, err := events.Marshal(events.Meta{ID: "01JSXQ6Z8Y0000000000000102", AggregateID: v2, ServerID: srv, Owner: owner, OccurredAt: at}, c2)
	if err != nil {
		t.Fatal(err)
	}
	for subj, b := range map[string][]byte{events.CredentialSubject(srv, v1): body, events.CredentialSubject(srv, v2): body2} {
		if _, err := js.Publish(context.Background(), subj, b); err != nil {
			t.Fatal(err)
		}
	}
	lcWaitCaughtUp(t, env, env.ReadModel)
	get := func(id string) map[string]any {
		r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv + "/credentials/" + id, User: "alice"})
		if r.Status != 200 {
			t.Fatalf("GET %s: %d %s", id, r.Status, r.Body)
		}
		m := r.JSON(t)
		delete(m, "id")
		return m
	}
	a, b := get(v1), get(v2)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) || a["name"] != "legacy" || a["authorization_preview"] != "****...cdef" {
		t.Fatalf("v1 answers %s, v2 answers %s", ja, jb)
	}
	before := lcDump(t, env.ReadModel)
	env.StopProjector()
	for _, p := range []string{env.ReadModel, env.ReadModel + "-wal", env.ReadModel + "-shm"} {
		os.Remove(p)
	}
	env.StartProjector()
	lcWaitCaughtUp(t, env, env.ReadModel)
	lcSameText(t, "read model rebuilt from a stream with version 1 events", before, lcDump(t, env.ReadModel))
}
