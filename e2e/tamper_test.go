package e2e

// Tamper evidence in the projector (issue 13, point 2): an event on vault.>
// that the audit keys did not sign — a raw publish by anyone who may publish
// there — or whose chain link names another predecessor — a replayed or
// reordered copy of a signed event — holds its server tree like an event this
// build cannot read, also across restarts; an operator's signed rejection of
// that sequence releases the tree, without the forged event, and a rebuild
// gives the same read model. The API's command side refuses writes on an
// aggregate whose loaded events do not verify until they are rejected.

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/service"
)

func TestProjectorHoldsForgedEvents(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{VerifyAudit: true})
	js := lcJS(t, env.NATSURL())
	srv := env.MustCreateServer(t, "alice", nil)
	cred := env.MustCreateCredential(t, "alice", srv, map[string]any{"bearer_token": "secret-token-123456"})["id"].(string)
	other := env.MustCreateServer(t, "bob", nil)
	owner := events.Owner{Account: "acct_a", User: "alice"}
	getCred := func() vaulttest.Response {
		return env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv + "/credentials/" + cred, User: "alice"})
	}

	forge := func(signer *audit.Keyring) uint64 {
		body, err := events.Marshal(events.Meta{ID: ulid.Make().String(), AggregateID: cred, ServerID: srv, Owner: owner,
			OccurredAt: events.NewTime(time.Now())}, events.CredentialRevoked{})
		if err != nil {
			t.Fatal(err)
		}
		subject := events.CredentialSubject(srv, cred)
		m := nats.NewMsg(subject)
		m.Data = body
		if signer != nil {
			for k, v := range signer.Sign(subject, body, audit.FirstLink) {
				m.Header.Set(k, v)
			}
		}
		ack, err := js.PublishMsg(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	reject := func(seq uint64) {
		es, _ := js.Stream(context.Background(), env.Stream)
		raw, err := es.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := events.Marshal(events.Meta{ID: ulid.Make().String(), AggregateID: cred, ServerID: srv,
			Owner: events.Owner{Account: "operator"}, OccurredAt: events.NewTime(time.Now())},
			events.AuditRejected{Sequence: seq, Subject: raw.Subject, Problem: "not signed", BodySHA256: audit.Hash(raw.Data)})
		subject := events.RejectionSubject(seq)
		m := nats.NewMsg(subject)
		m.Data = body
		for k, v := range env.AuditKeys.Sign(subject, body, audit.Unchained) {
			m.Header.Set(k, v)
		}
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	held := func() bool {
		r := getCred()
		if r.Status != http.StatusServiceUnavailable {
			return false
		}
		e := r.JSON(t)["error"].(map[string]any)
		return e["code"] == "aggregate_held" && strings.Contains(e["message"].(string), "does not verify")
	}
	served := func() bool {
		r := getCred()
		return r.Status == http.StatusOK && r.JSON(t)["revoked_at"] == nil
	}

	for _, tc := range []struct {
		name   string
		signer *audit.Keyring
	}{
		{"unsigned raw publish", nil},
		{"signed by a key the vault does not hold", mustAuditKeys(t, audit.NewKeySpec("audit1"))},
	} {
		seq := forge(tc.signer)
		vaulttest.Eventually(t, 10*time.Second, held)
		// The API's command side refuses to decide on it either.
		revoke := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/credentials/" + cred + "/revoke", User: "alice"})
		if revoke.Status != http.StatusServiceUnavailable || !strings.Contains(string(revoke.Body), "does not verify") {
			t.Fatalf("%s: a write on the forged aggregate: %d %s", tc.name, revoke.Status, revoke.Body)
		}
		// Other owners' servers are served as before.
		if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + other, User: "bob"}); r.Status != 200 {
			t.Fatalf("%s: another server answers %d", tc.name, r.Status)
		}
		// A signed event of the held tree waits behind the forged one.
		env.MustCreateCredential(t, "alice", srv, map[string]any{"bearer_token": "secret-token-789012"})
		reject(seq)
		vaulttest.Eventually(t, 10*time.Second, served)
		// The signed create kept behind it was applied on release.
		if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv + "/credentials", User: "alice"}); len(r.JSON(t)["data"].([]any)) < 2 {
			t.Fatalf("%s: the kept create was not applied: %s", tc.name, r.Body)
		}
	}
	// A replayed old event and a reordered copy are signed by the vault, but
	// their chain links name another predecessor: held as well, also across
	// a projector restart, until rejected.
	es, _ := js.Stream(context.Background(), env.Stream)
	copyOf := func(seq uint64) uint64 {
		raw, err := es.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(raw.Subject)
		m.Data = raw.Data
		for k := range raw.Header {
			if !strings.HasPrefix(k, "Nats-") {
				m.Header.Set(k, raw.Header.Get(k))
			}
		}
		ack, err := js.PublishMsg(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	first, err := es.GetMsg(context.Background(), 1, jetstream.WithGetMsgSubject(events.CredentialSubject(srv, cred)))
	if err != nil {
		t.Fatal(err)
	}
	env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv, User: "alice", Body: map[string]any{"name": "renamed"}})
	update, err := es.GetLastMsgForSubject(context.Background(), events.ServerSubject(srv))
	if err != nil {
		t.Fatal(err)
	}
	for name, seq := range map[string]uint64{"replayed creation": first.Sequence, "reordered update": update.Sequence} {
		forged := copyOf(seq)
		vaulttest.Eventually(t, 10*time.Second, func() bool {
			r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv, User: "alice"})
			return r.Status == http.StatusServiceUnavailable
		})
		env.StopProjector()
		env.StartProjector()
		time.Sleep(200 * time.Millisecond)
		if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv, User: "alice"}); r.Status != http.StatusServiceUnavailable {
			t.Fatalf("%s: released by a restart: %d", name, r.Status)
		}
		reject(forged)
		vaulttest.Eventually(t, 10*time.Second, served)
	}

	// Every forgery rejected: writes are decided on the genuine history again.
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/credentials/" + cred + "/revoke", User: "alice"}); r.Status != http.StatusOK {
		t.Fatalf("revoke after the rejections: %d %s", r.Status, r.Body)
	}
	revoked := func() bool {
		r := getCred()
		return r.Status == http.StatusOK && r.JSON(t)["revoked_at"] != nil
	}
	vaulttest.Eventually(t, 10*time.Second, revoked)

	// A replayed creation after the revoke holds the tree. An operator's
	// rebuild checks chain links as the projector does, so it holds the tree
	// too, rather than apply the copy (which would bring the revoked
	// credential back).
	forged := copyOf(first.Sequence)
	vaulttest.Eventually(t, 10*time.Second, held)
	lcWaitCaughtUp(t, env, env.ReadModel)
	before := lcDump(t, env.ReadModel)
	rb := &service.Rebuild{NATSURL: env.NATSURL(), Stream: env.Stream, ReadModelPath: env.ReadModel, AuditKeys: env.AuditKeys,
		Log: slog.New(slog.DiscardHandler)}
	if err := rb.Run(context.Background()); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	lcSameText(t, "read model after a rebuild", before, lcDump(t, env.ReadModel))
	if !held() {
		t.Fatal("the rebuild released the tree held at the replayed creation")
	}
	reject(forged)
	vaulttest.Eventually(t, 10*time.Second, revoked)

	// Replay from scratch (rejections come after what they reject) gives the same read model.
	lcWaitCaughtUp(t, env, env.ReadModel)
	before = lcDump(t, env.ReadModel)
	env.StopProjector()
	for _, p := range []string{env.ReadModel, env.ReadModel + "-wal", env.ReadModel + "-shm"} {
		os.Remove(p)
	}
	env.StartProjector()
	lcWaitCaughtUp(t, env, env.ReadModel)
	lcSameText(t, "read model after replay", before, lcDump(t, env.ReadModel))
}

func mustAuditKeys(t *testing.T, spec string) *audit.Keyring {
	t.Helper()
	k, err := audit.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
