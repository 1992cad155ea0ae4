package service_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/service"
)

// scheduler is one replica's expiry scheduler, run on its own connection.
type scheduler struct {
	name   string
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

func startScheduler(t *testing.T, env *vaulttest.Env, name string, now func() time.Time) *scheduler {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nc, err := nats.Connect(env.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventstore.Open(ctx, nc, eventstore.Config{Stream: env.Stream})
	if err != nil {
		t.Fatal(err)
	}
	db, err := projections.Open(ctx, env.ReadModel, projections.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v := &app.Vault{DB: db, Keys: env.Keyring, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	v.SetStore(st)
	x := &service.Expiry{Vault: v, Log: env.Logger("expiry-" + name), Holder: name, Lead: 3 * time.Hour,
		Interval: 50 * time.Millisecond, LeaseTTL: time.Second, Now: now}
	s := &scheduler{name: name, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		x.Run(ctx)
		db.Close()
		nc.Close()
	}()
	t.Cleanup(s.stop)
	return s
}

// crash cuts the scheduler off NATS without letting it release its lease
// (as a killed or partitioned replica): the lease expires after its TTL.
func (s *scheduler) crash() { s.nc.Close() }

func (s *scheduler) stop() {
	s.cancel()
	<-s.done
}

// notices counts the expiry events per subject.
func notices(t *testing.T, js jetstream.JetStream, stream string) map[string]uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, f := range []string{"vault.*.credential.*.expired", "vault.*.credential.*.expiring_soon"} {
		info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(f))
		if err != nil {
			t.Fatal(err)
		}
		for subj, n := range info.State.Subjects {
			out[subj] = n
		}
	}
	return out
}

// TestExpiryScheduler: two replicas schedule, one works at a time; each
// credential gets expiring_soon once within the lead time and expired once
// past expires_at (revoked ones and ones without expiry get nothing);
// a crashed lease holder (cut off NATS, lease not released) is replaced
// once its lease expires; a restart repeats nothing.
func TestExpiryScheduler(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	js := vaulttest.MustJetStream(t, env.NATSURL())
	start := time.Now()
	var offset atomic.Int64
	clock := func() time.Time { return start.Add(time.Duration(offset.Load())) }
	srv := env.MustCreateServer(t, "alice", nil)
	cred := func(expires *time.Time) string {
		body := map[string]any{"bearer_token": "secret-token-123456"}
		if expires != nil {
			body["expires_at"] = expires.UTC().Format(time.RFC3339Nano)
		}
		return env.MustCreateCredential(t, "alice", srv, body)["id"].(string)
	}
	at := func(d time.Duration) *time.Time { t := start.Add(d); return &t }
	c1, c2, c3, c4 := cred(at(time.Hour)), cred(at(2*time.Hour)), cred(at(100*time.Hour)), cred(nil)
	c5 := cred(at(time.Hour))
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/credentials/" + c5 + "/revoke", User: "alice"}); r.Status != 200 {
		t.Fatalf("revoke: %d", r.Status)
	}
	soon := func(id string) string { return events.ExpiringSoonSubject(srv, id) }
	expired := func(id string) string { return events.ExpiredSubject(srv, id) }
	want := func(w map[string]uint64) {
		t.Helper()
		vaulttest.Eventually(t, 20*time.Second, func() bool {
			got := notices(t, js, env.Stream)
			if len(got) != len(w) {
				return false
			}
			for k, n := range w {
				if got[k] != n {
					return false
				}
			}
			return true
		})
		// Stable: nothing more arrives over a few scan intervals.
		time.Sleep(300 * time.Millisecond)
		if got := notices(t, js, env.Stream); len(got) != len(w) {
			t.Fatalf("notices %v, want %v", got, w)
		}
		for k, n := range notices(t, js, env.Stream) {
			if n != 1 || w[k] != 1 {
				t.Fatalf("%s holds %d notices (want %v)", k, n, w)
			}
		}
	}

	a := startScheduler(t, env, "replica-a", clock)
	b := startScheduler(t, env, "replica-b", clock)
	want(map[string]uint64{soon(c1): 1, soon(c2): 1})

	offset.Store(int64(90 * time.Minute))
	want(map[string]uint64{soon(c1): 1, soon(c2): 1, expired(c1): 1})

	// Stop whichever replica holds the lease; the other takes over.
	kv, err := js.KeyValue(context.Background(), env.Stream+"_LEASES")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), "expiry-scheduler")
	if err != nil {
		t.Fatal(err)
	}
	holder, other := a, b
	if string(e.Value()) == "replica-b" {
		holder, other = b, a
	}
	crashed := time.Now()
	holder.crash()
	vaulttest.Eventually(t, 10*time.Second, func() bool {
		e, err := kv.Get(context.Background(), "expiry-scheduler")
		return err == nil && string(e.Value()) == other.name
	})
	if waited := time.Since(crashed); waited < 500*time.Millisecond {
		t.Fatalf("the lease moved %s after the holder crashed, before its TTL", waited)
	}
	offset.Store(int64(150 * time.Minute))
	want(map[string]uint64{soon(c1): 1, soon(c2): 1, expired(c1): 1, expired(c2): 1})
	if e, err := kv.Get(context.Background(), "expiry-scheduler"); err != nil || string(e.Value()) != other.name {
		t.Fatalf("lease after the stop: %v", err)
	}

	// A restart of everything repeats nothing; c3 comes within the lead later.
	other.stop()
	startScheduler(t, env, "replica-c", clock)
	time.Sleep(300 * time.Millisecond)
	offset.Store(int64(98 * time.Hour))
	want(map[string]uint64{soon(c1): 1, soon(c2): 1, expired(c1): 1, expired(c2): 1, soon(c3): 1})
	_ = c4
}
