package e2e

// The data-key pool (app/keypool.go): after a create on an (owner, server),
// the API stores data keys ahead for the pair, so that the next create there
// appends its event without a key publish on its path. These tests watch the
// keys stream directly: a pooled key is a data key whose credential is not
// (yet) listed.

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/service"
)

// kpUnused returns the data keys of the keys stream whose credential is not
// listed under any of the servers (the pooled keys, in these tests).
func kpUnused(tb testing.TB, env *vaulttest.Env, user string, serverIDs ...string) map[string]bool {
	tb.Helper()
	listed := map[string]bool{}
	for _, sid := range serverIDs {
		for _, id := range kpList(tb, env, user, sid) {
			listed[id] = true
		}
	}
	prefix := shredKeySubject(env, "")
	out := map[string]bool{}
	for subj := range shredAllKeys(tb, env, shredJS(tb, env)) {
		if id, ok := strings.CutPrefix(subj, prefix); ok && !listed[id] {
			out[id] = true
		}
	}
	return out
}

// kpList lists the ids of a server's credentials in id order (as a user).
func kpList(tb testing.TB, env *vaulttest.Env, user, serverID string) []string {
	tb.Helper()
	r := env.Do(tb, vaulttest.Request{Method: "GET", Path: "/servers/" + serverID + "/credentials?order=asc&limit=100", User: user})
	if r.Status == http.StatusNotFound {
		return nil
	}
	var ids []string
	for _, c := range r.JSON(tb)["data"].([]any) {
		ids = append(ids, c.(map[string]any)["id"].(string))
	}
	return ids
}

// kpWaitPooled waits until the pool holds a key for the pair and returns
// the unused keys then.
func kpWaitPooled(tb testing.TB, env *vaulttest.Env, user string, serverIDs ...string) map[string]bool {
	tb.Helper()
	var unused map[string]bool
	vaulttest.Eventually(tb, 5*time.Second, func() bool {
		unused = kpUnused(tb, env, user, serverIDs...)
		return len(unused) > 0
	})
	return unused
}

func kpCreate(tb testing.TB, env *vaulttest.Env, user, serverID, token string, header map[string]string) vaulttest.Response {
	tb.Helper()
	r := env.Do(tb, vaulttest.Request{Method: "POST", Path: "/servers/" + serverID + "/credentials", User: user,
		Body: map[string]any{"bearer_token": token}, Header: header})
	if r.Status != http.StatusCreated {
		tb.Fatalf("create: %d %s", r.Status, r.Body)
	}
	return r
}

// Creates after the first on a server take a key stored before they were
// sent (no key publish on their path), in order, and every credential opens
// with its key; an idempotent create records the pooled id and its retry
// answers the same credential.
func TestCreatesTakePooledKeys(t *testing.T) {
	for _, atomic := range []bool{false, true} {
		t.Run(map[bool]string{false: "async", true: "atomic"}[atomic], func(t *testing.T) {
			kpCreatesTakePooledKeys(t, vaulttest.Options{AllowPrivate: true, KeyPoolMaxAge: time.Minute, KeyPoolAtomic: atomic, SyncAlways: atomic})
		})
	}
}

func kpCreatesTakePooledKeys(t *testing.T, opts vaulttest.Options) {
	env := vaulttest.MustStart(t, opts)
	up := ocStartUpstream(t)
	s := tsCreateServer(t, env, up.URL, nil)
	order := []string{ocID(kpCreate(t, env, "", s, up.token("first"), nil))} // inline: the pair has no pool yet
	for i := range 6 {
		before := kpWaitPooled(t, env, "", s)
		id := ocID(kpCreate(t, env, "", s, up.token("pooled"), nil))
		if !before[id] {
			t.Fatalf("create %d got %s, whose key was not stored before the create was sent (pooled: %v)", i, id, before)
		}
		order = append(order, id)
	}
	if listed := kpList(t, env, "", s); !slices.Equal(listed, order) {
		t.Fatalf("listed in id order %v, created in order %v", listed, order)
	}
	for _, id := range order {
		if ok, detail := ocTestServer(t, env, s, id); !ok {
			t.Fatalf("credential %s does not open: %s", id, detail)
		}
	}

	// Idempotent: the ticket records the pooled id; a retry replays it.
	before := kpWaitPooled(t, env, "", s)
	key := map[string]string{"Idempotency-Key": "kp-1"}
	first := kpCreate(t, env, "", s, "tok-kp-idem-0123456789", key)
	id := ocID(first)
	if !before[id] {
		t.Fatalf("idempotent create got %s, not a pooled key (pooled: %v)", id, before)
	}
	again := kpCreate(t, env, "", s, "tok-kp-idem-0123456789", key)
	if ocID(again) != id || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry answered %s (replayed %q), want %s", ocID(again), again.Header.Get("Idempotent-Replayed"), id)
	}
}

// Pooled keys older than their maximum age are not used but destroyed.
func TestPooledKeysExpireUnused(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{KeyPoolMaxAge: 300 * time.Millisecond})
	s := env.MustCreateServer(t, "", nil)
	first := ocID(kpCreate(t, env, "", s, "tok-kp-exp-0123456789", nil))
	stale := kpWaitPooled(t, env, "", s)
	vaulttest.Eventually(t, 5*time.Second, func() bool {
		now := kpUnused(t, env, "", s)
		for id := range stale {
			if now[id] {
				return false
			}
		}
		return true
	})
	next := ocID(kpCreate(t, env, "", s, "tok-kp-exp-1123456789", nil))
	if stale[next] {
		t.Fatalf("a create took the expired key %s", next)
	}
	for _, id := range []string{first, next} {
		if _, ok := shredGetKey(t, env, shredJS(t, env), id); !ok {
			t.Fatalf("the key of credential %s is gone", id)
		}
	}
}

// A graceful shutdown destroys the pool's keys: no key without a credential
// is left.
func TestShutdownDestroysPooledKeys(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{KeyPoolMaxAge: time.Minute})
	s := env.MustCreateServer(t, "", nil)
	cred := ocID(kpCreate(t, env, "", s, "tok-kp-stop-0123456789", nil))
	pooled := kpWaitPooled(t, env, "", s)
	env.StopAPI()
	js := shredJS(t, env)
	for id := range pooled {
		if _, ok := shredGetKey(t, env, js, id); ok {
			t.Fatalf("pooled key %s left after a graceful shutdown", id)
		}
	}
	if _, ok := shredGetKey(t, env, js, cred); !ok {
		t.Fatal("the shutdown destroyed a credential's key")
	}
	env.StartAPI()
	kpCreate(t, env, "", s, "tok-kp-stop-1123456789", nil)
}

// Deleting a server or erasing an owner destroys the pair's pooled keys at
// once (long before they would expire).
func TestDeleteAndEraseDestroyPooledKeys(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{KeyPoolMaxAge: time.Minute})
	// Server delete.
	s := env.MustCreateServer(t, "kp-del", nil)
	kpCreate(t, env, "kp-del", s, "tok-kp-del-0123456789", nil)
	pooled := kpWaitPooled(t, env, "kp-del", s)
	if r := env.Do(t, vaulttest.Request{Method: "DELETE", Path: "/servers/" + s, User: "kp-del"}); r.Status != http.StatusOK {
		t.Fatalf("delete server: %d %s", r.Status, r.Body)
	}
	kpMustBeGone(t, env, pooled)

	// Owner erase.
	e1 := env.MustCreateServer(t, "kp-erase", nil)
	kpCreate(t, env, "kp-erase", e1, "tok-kp-erase-0123456789", nil)
	pooled = kpWaitPooled(t, env, "kp-erase", e1)
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/erase", User: "kp-erase"}); r.Status != http.StatusOK {
		t.Fatalf("erase: %d %s", r.Status, r.Body)
	}
	kpMustBeGone(t, env, pooled)
}

func kpMustBeGone(tb testing.TB, env *vaulttest.Env, ids map[string]bool) {
	tb.Helper()
	js := shredJS(tb, env)
	vaulttest.Eventually(tb, 3*time.Second, func() bool {
		for id := range ids {
			if _, ok := shredGetKey(tb, env, js, id); ok {
				return false
			}
		}
		return true
	})
}

// A crash (here: the API stopping while NATS is down, so it cannot destroy
// its pool) leaves pooled keys without a credential: orphans, which the
// projector's sweep destroys after its grace period, keeping every
// credential's key.
func TestCrashLeavesPooledKeysToTheSweep(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true, KeyPoolMaxAge: time.Minute})
	up := ocStartUpstream(t)
	s := tsCreateServer(t, env, up.URL, nil)
	cred := ocID(kpCreate(t, env, "", s, up.token("crash"), nil))
	pooled := kpWaitPooled(t, env, "", s)
	env.StopNATS()
	env.StopAPI()
	env.StopProjector()
	env.StartNATS()
	for id := range pooled {
		if _, ok := shredGetKey(t, env, shredJS(t, env), id); !ok {
			t.Fatalf("pooled key %s destroyed although the API could not reach NATS", id)
		}
	}
	env.StartAPI()
	// An hour on: every orphan is past the sweep's grace period.
	srProjector(t, env, &service.Projector{SweepInterval: 100 * time.Millisecond, SweepGrace: 10 * time.Minute,
		Now: func() time.Time { return time.Now().Add(time.Hour) }})
	kpMustBeGone(t, env, pooled)
	if _, ok := shredGetKey(t, env, shredJS(t, env), cred); !ok {
		t.Fatal("the sweep destroyed a credential's key")
	}
	if ok, detail := ocTestServer(t, env, s, cred); !ok {
		t.Fatalf("credential %s does not open after the sweep: %s", cred, detail)
	}
}

// A create with an Idempotency-Key that took a pooled key and was refused
// before it used it (409 limit_reached: the record is released, a retry
// takes the attempt over with the same credential id) keeps that key
// stored: the retry's create reuses it, and a key destroyed after the retry
// read it would leave a credential whose secret cannot be opened.
func TestIdempotentRetryKeepsPooledKey(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true, KeyPoolMaxAge: time.Minute,
		Limits: app.Limits{CredentialsPerServer: 1}})
	up := ocStartUpstream(t)
	s := tsCreateServer(t, env, up.URL, nil)
	first := ocID(kpCreate(t, env, "", s, up.token("first"), nil))
	pooled := kpWaitPooled(t, env, "", s)

	key := map[string]string{"Idempotency-Key": "kp-retry-after-409"}
	token := up.token("retried")
	lmMustLimitReached(t, env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + s + "/credentials",
		Body: map[string]any{"bearer_token": token}, Header: key}))
	time.Sleep(500 * time.Millisecond) // the pool's loop destroys its trash meanwhile
	stored := kpUnused(t, env, "", s)

	path := "/servers/" + s + "/credentials/" + first
	if r := env.Do(t, vaulttest.Request{Method: "DELETE", Path: path}); r.Status != http.StatusOK {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	id := ocID(kpCreate(t, env, "", s, token, key))
	if !pooled[id] {
		t.Fatalf("the retry's credential %s is not the pooled id the first attempt took (pooled: %v)", id, pooled)
	}
	if !stored[id] {
		t.Fatalf("the key of %s was destroyed after the refused attempt (stored then: %v)", id, stored)
	}
	time.Sleep(500 * time.Millisecond)
	if ok, detail := ocTestServer(t, env, s, id); !ok {
		t.Fatalf("credential %s does not open: %s", id, detail)
	}
}

// With the production rule, a pair written now and then gets no keys
// stored ahead (they would mostly expire unused); a pair whose creates
// follow each other closely does.
func TestOnlyHotPairsArePooled(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{KeyPoolColdPairs: true, KeyPoolMaxAge: time.Minute})
	cold := tsCreateServer(t, env, "https://cold.example.com/mcp", nil)
	hot := tsCreateServer(t, env, "https://hot.example.com/mcp", nil)
	for range 3 {
		kpCreate(t, env, "", cold, "tok-cold-0123456789", nil)
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if unused := kpUnused(t, env, "", cold); len(unused) != 0 {
		t.Fatalf("a cold pair has keys stored ahead: %v", unused)
	}
	for range 20 {
		kpCreate(t, env, "", hot, "tok-hot-0123456789", nil)
	}
	kpWaitPooled(t, env, "", cold, hot)
}
