package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/seal"
)

// TestVerifyTheVaultsOwnStream: everything the real API appends — creates,
// updates, revokes, deletes, uses, an erase, expiry notices — is signed and
// chained so that verify passes with the public keys alone; then a raw
// publish, a replayed old event and a reordered copy each break it at their
// sequence.
func TestVerifyTheVaultsOwnStream(t *testing.T) {
	env := vaultEnv(t, seal.NewKeySpec("k1"))
	t.Setenv("VAULT_AUDIT_KEYS", "")
	t.Setenv("VAULT_AUDIT_PUBLIC_KEYS", env.AuditKeys.PublicSpec())
	srv := env.MustCreateServer(t, "alice", nil)
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv, User: "alice", Body: map[string]any{"name": "renamed"}}); r.Status != 200 {
		t.Fatalf("update: %d %s", r.Status, r.Body)
	}
	var creds []string
	for i := 0; i < 3; i++ {
		creds = append(creds, env.MustCreateCredential(t, "alice", srv, map[string]any{"bearer_token": fmt.Sprintf("secret-token-%d-123456", i)})["id"].(string))
	}
	env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/test", User: "alice"}) // a use (connection refused)
	env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/credentials/" + creds[0] + "/revoke", User: "alice"})
	env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/credentials/" + creds[0] + "/revoke", User: "alice"})
	env.Do(t, vaulttest.Request{Method: "DELETE", Path: "/servers/" + srv + "/credentials/" + creds[1], User: "alice"})
	other := env.MustCreateServer(t, "bob", nil)
	env.MustCreateCredential(t, "bob", other, map[string]any{"bearer_token": "secret-token-bob-123456"})
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/erase", User: "bob"}); r.Status != 200 {
		t.Fatalf("erase: %d %s", r.Status, r.Body)
	}
	env.Do(t, vaulttest.Request{Method: "DELETE", Path: "/servers/" + srv, User: "alice"})

	code, res := verifyJSON(t)
	if code != 0 || !res.OK || res.Signed != res.Checked || res.Checked < 10 || len(res.Invalid) != 0 {
		t.Fatalf("the vault's own stream: exit %d %+v", code, res)
	}

	nc, err := nats.Connect(env.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, _ := js.Stream(context.Background(), env.Stream)
	publish := func(subject string, data []byte, h nats.Header) uint64 {
		m := nats.NewMsg(subject)
		m.Data = data
		for k := range h {
			if strings.HasPrefix(k, "Vault-Audit-") {
				m.Header.Set(k, h.Get(k))
			}
		}
		ack, err := js.PublishMsg(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	firstOn := func(subject string) *jetstream.RawStreamMsg {
		m, err := stream.GetMsg(context.Background(), 1, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	cred2 := events.CredentialSubject(srv, creds[2])
	for _, f := range []struct {
		name, problem string
		forge         func() uint64
	}{
		{"raw publish", "not signed", func() uint64 {
			// a revoke of a live credential, well-formed, as anyone allowed to publish on vault.> could send it
			body, _ := events.Marshal(events.Meta{ID: "01JSXQ6Z8Y0000000000000099", AggregateID: creds[2], ServerID: srv,
				Owner: events.Owner{Account: "acct_a", User: "alice"}, OccurredAt: events.NewTime(firstOn(cred2).Time)}, events.CredentialRevoked{})
			return publish(cred2, body, nil)
		}},
		{"replayed old event", "chain link", func() uint64 {
			m := firstOn(events.ServerSubject(srv)) // the server's creation, after its deletion
			return publish(m.Subject, m.Data, m.Header)
		}},
		{"reordered copy", "chain link", func() uint64 {
			up, err := stream.GetMsg(context.Background(), firstOn(events.ServerSubject(srv)).Sequence+1)
			if err != nil {
				t.Fatal(err)
			}
			return publish(up.Subject, up.Data, up.Header) // the update again, out of its place
		}},
	} {
		seq := f.forge()
		code, res := verifyJSON(t)
		if code != exitProblem || len(res.Breaks) != 1 || res.Breaks[0].Seq != seq || !strings.Contains(res.Breaks[0].Problem, f.problem) {
			t.Fatalf("%s at %d: exit %d %+v", f.name, seq, code, res)
		}
		t.Setenv("VAULT_AUDIT_KEYS", env.AuditSpec) // reject signs
		if code, out, errs := vaultctl(t, "audit", "reject", fmt.Sprint(seq)); code != 0 {
			t.Fatalf("reject %d: %d %s %s", seq, code, out, errs)
		}
		t.Setenv("VAULT_AUDIT_KEYS", "")
	}
	if code, res := verifyJSON(t); code != 0 || len(res.Rejected) != 3 {
		t.Fatalf("after the rejections: %d %+v", code, res)
	}
	// An auditor with another vault's public key sees nothing verify.
	t.Setenv("VAULT_AUDIT_PUBLIC_KEYS", mustAudit(t, audit.NewKeySpec("audit1")).PublicSpec())
	if code, res := verifyJSON(t); code != exitProblem || res.Breaks[0].Seq != 1 {
		t.Fatalf("with a foreign key: %d %+v", code, res)
	}
}

func mustAudit(t *testing.T, spec string) *audit.Keyring {
	t.Helper()
	k, err := audit.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
