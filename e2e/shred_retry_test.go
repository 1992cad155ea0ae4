package e2e

// Shredding always finishes (issue 9, point 3): destructions are recorded
// with the projection and retried until the keys are gone, across restarts;
// a sweep destroys keys nothing else would.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/service"
)

// srProjector runs a projector of its own on env's stream and read model
// (the env's own is stopped), until the returned stop is called.
func srProjector(tb testing.TB, env *vaulttest.Env, p *service.Projector) (stop func()) {
	tb.Helper()
	p.NATSURL, p.Stream, p.ReadModelPath = env.NATSURL(), env.Stream, env.ReadModel
	if p.Log == nil {
		p.Log = env.Logger("projector-under-test")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("projector: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// srPending reads the pending-destruction gauge the API exports.
func srPending(tb testing.TB, env *vaulttest.Env) int {
	tb.Helper()
	n, err := strconv.Atoi(heldMetric(tb, env, "vault_projector_pending_key_destructions"))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// srRawWrite publishes an event as an API that then crashed before it could
// destroy the key itself.
func srRawWrite(tb testing.TB, env *vaulttest.Env, server, aggregate string, e events.Event) uint64 {
	tb.Helper()
	subj, body := heldEvent(tb, server, aggregate, e)
	return heldPublish(tb, vaulttest.MustJetStream(tb, env.NATSURL()), subj, body)
}

// Revoke, credential delete and server delete (whose event omits a
// credential created concurrently) while every key destruction fails: the
// destructions are recorded, the metric and /readyz show them (still 200),
// they survive a projector restart, and once the failures stop every key is
// gone from the keys stream and its bytes from every file of the vault,
// while the live credentials keep theirs.
func TestShreddingFinishesAfterFailures(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	js := vaulttest.MustJetStream(t, env.NATSURL())
	env.StopProjector()
	var failing atomic.Bool
	var failures atomic.Int64
	failing.Store(true)
	fault := func(string) error {
		if failing.Load() {
			failures.Add(1)
			return errors.New("injected: keys stream unavailable")
		}
		return nil
	}
	stop := srProjector(t, env, &service.Projector{DestroyFault: fault, SweepInterval: -1})

	s1 := env.MustCreateServer(t, "", nil)
	s2 := env.MustCreateServer(t, "", nil)
	cred := func(s string, i int) string {
		return env.MustCreateCredential(t, "", s, map[string]any{"bearer_token": fmt.Sprintf("tok-retry-%d-0123456789", i)})["id"].(string)
	}
	revoked, deleted, live, listed, omitted := cred(s1, 1), cred(s1, 2), cred(s1, 3), cred(s2, 4), cred(s2, 5)
	wrapped := map[string][]byte{}
	for _, id := range []string{revoked, deleted, live, listed, omitted} {
		w, ok := shredGetKey(t, env, js, id)
		if !ok {
			t.Fatalf("no key for %s", id)
		}
		wrapped[id] = w
	}
	srRawWrite(t, env, s1, revoked, events.CredentialRevoked{})
	srRawWrite(t, env, s1, deleted, events.CredentialDeleted{})
	srRawWrite(t, env, s2, s2, events.ServerDeleted{CredentialIDs: []string{listed}})
	lcWaitCaughtUp(t, env, env.ReadModel)
	doomed := []string{revoked, deleted, listed, omitted}

	vaulttest.Eventually(t, 20*time.Second, func() bool { return failures.Load() >= 8 })
	if n := srPending(t, env); n != 4 {
		t.Fatalf("pending destructions %d, want 4", n)
	}
	for _, id := range doomed {
		if _, ok := shredGetKey(t, env, js, id); !ok {
			t.Fatalf("key of %s gone although every destruction failed", id)
		}
	}
	status, raw, ready := heldReady(t, env)
	pd, _ := ready["projector"].(map[string]any)
	if status != http.StatusOK || pd["pending_key_destructions"] != float64(4) || !strings.Contains(raw, "4 data keys") {
		t.Fatalf("/readyz while destructions fail: %d %s", status, raw)
	}

	// Restart: the records survive, still failing.
	stop()
	before := failures.Load()
	srProjector(t, env, &service.Projector{DestroyFault: fault, SweepInterval: -1})
	vaulttest.Eventually(t, 20*time.Second, func() bool { return failures.Load() >= before+4 })
	if n := srPending(t, env); n != 4 {
		t.Fatalf("pending destructions after a restart %d, want 4", n)
	}
	// The failures stop: the back-off retries finish the job.
	failing.Store(false)
	start := time.Now()
	vaulttest.Eventually(t, 60*time.Second, func() bool { return srPending(t, env) == 0 })
	t.Logf("%d injected failures; all keys destroyed %s after the failures stopped", failures.Load(), time.Since(start).Round(time.Millisecond))
	for _, id := range doomed {
		if _, ok := shredGetKey(t, env, js, id); ok {
			t.Fatalf("key of %s still in the keys stream", id)
		}
	}
	if _, ok := shredGetKey(t, env, js, live); !ok {
		t.Fatal("the live credential lost its key")
	}
	if status, raw, _ := heldReady(t, env); status != http.StatusOK || strings.Contains(raw, "data keys") {
		t.Fatalf("/readyz after the destructions: %d %s", status, raw)
	}
	env.StopAll()
	needles := map[string][]byte{}
	for id, w := range wrapped {
		needles[id] = w
	}
	found := shredScanTree(t, env.Dir, needles)
	for _, id := range doomed {
		if files := found[id]; len(files) > 0 {
			t.Errorf("wrapped key of %s still on disk in %v", id, files)
		}
	}
	if len(found[live]) == 0 {
		t.Fatal("the live key's bytes are not found on disk: the scan proves nothing")
	}
}

// The sweep destroys keys that no recorded destruction covers: the key of a
// revoked credential whose record is missing (a read model projected by an
// older build) and, once older than the grace period, the key of a create
// whose event was never stored. It keeps live keys and young orphans.
func TestSweepDestroysLeftoverKeys(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	js := vaulttest.MustJetStream(t, env.NATSURL())
	env.StopProjector()
	var offset atomic.Int64
	var blocked sync.Map
	srProjector(t, env, &service.Projector{SweepInterval: 100 * time.Millisecond, SweepGrace: 10 * time.Minute,
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) },
		DestroyFault: func(id string) error {
			if _, ok := blocked.Load(id); ok {
				return errors.New("injected failure")
			}
			return nil
		}})

	s := env.MustCreateServer(t, "", nil)
	live := env.MustCreateCredential(t, "", s, map[string]any{"bearer_token": "tok-sweep-live-0123456789"})["id"].(string)
	revoked := env.MustCreateCredential(t, "", s, map[string]any{"bearer_token": "tok-sweep-rev-0123456789"})["id"].(string)
	// A failed create: the key stored, its event never.
	nc, err := nats.Connect(env.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	st, err := eventstore.Open(context.Background(), nc, eventstore.Config{Stream: env.Stream})
	if err != nil {
		t.Fatal(err)
	}
	orphan := domain.CredentialID(ulid.Make())
	if err := st.PutKey(context.Background(), orphan, []byte(`{"kid":"k1","nonce":"AAAA","ciphertext":"orphan"}`)); err != nil {
		t.Fatal(err)
	}

	// A credential of a held server: the read model has no row for it, the
	// stream has its (future) create.
	heldSrv := env.MustCreateServer(t, "", nil)
	heldCred := domain.CredentialID(ulid.Make())
	if err := st.PutKey(context.Background(), heldCred, []byte(`{"kid":"k1","nonce":"AAAA","ciphertext":"held"}`)); err != nil {
		t.Fatal(err)
	}
	subj, body := heldFuture(heldSrv, heldCred)
	heldPublish(t, js, subj, body)

	// The revoke is projected but its destruction record is lost.
	blocked.Store(revoked, true)
	srRawWrite(t, env, s, revoked, events.CredentialRevoked{})
	lcWaitCaughtUp(t, env, env.ReadModel)
	vaulttest.Eventually(t, 10*time.Second, func() bool { return srPending(t, env) == 1 })
	rm, err := sql.Open("sqlite3", "file:"+env.ReadModel+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	if _, err := rm.Exec("DELETE FROM pending_shreds"); err != nil {
		t.Fatal(err)
	}
	blocked.Delete(revoked)
	vaulttest.Eventually(t, 20*time.Second, func() bool {
		_, ok := shredGetKey(t, env, js, revoked)
		return !ok
	})
	time.Sleep(500 * time.Millisecond) // several more sweeps
	if _, ok := shredGetKey(t, env, js, orphan); !ok {
		t.Fatal("the sweep destroyed an orphan key younger than the grace period")
	}
	// An hour later the orphan is past the grace period.
	offset.Store(int64(time.Hour))
	vaulttest.Eventually(t, 20*time.Second, func() bool {
		_, ok := shredGetKey(t, env, js, orphan)
		return !ok
	})
	time.Sleep(300 * time.Millisecond)
	if _, ok := shredGetKey(t, env, js, live); !ok {
		t.Fatal("the sweep destroyed a live credential's key")
	}
	if _, ok := shredGetKey(t, env, js, heldCred); !ok {
		t.Fatal("the sweep destroyed the key of a credential under a held server")
	}
}

// After each committed batch the projector announces the applied sequence on
// core NATS, on vaultapplied.<stream>.<instance id of the read model>.
func TestProjectorAnnouncesAppliedSequence(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	nc, err := nats.Connect(env.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	db := lcOpenReadOnly(t, env.ReadModel)
	var instance string
	if err := db.QueryRow("SELECT instance_id FROM read_model_instance").Scan(&instance); err != nil {
		t.Fatal(err)
	}
	db.Close()
	sub, err := nc.SubscribeSync("vaultapplied." + strings.ToLower(env.Stream) + "." + instance)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	env.MustCreateServer(t, "", nil)
	target := lcLastSeq(t, env.NATSURL(), env.Stream)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no announcement of sequence %d: %v", target, err)
		}
		seq, err := strconv.ParseUint(string(m.Data), 10, 64)
		if err != nil {
			t.Fatalf("announcement %q: %v", m.Data, err)
		}
		if seq >= target {
			if applied := lcAppliedSeq(t, env.ReadModel); applied < seq {
				t.Fatalf("announced %d before committing it (read model at %d)", seq, applied)
			}
			return
		}
	}
}
