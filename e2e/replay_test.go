package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/service"
)

// lcVariedState builds a read model with every kind of row: servers of
// several owners with every field, updated ones (fields set and cleared),
// credentials of every auth type, revoked and deleted ones, a deleted server
// with credentials, plus bulk so a rebuild takes a moment. It returns the
// GET paths (as user) whose answers must survive a rebuild.
func lcVariedState(tb testing.TB, env *vaulttest.Env) (reads []vaulttest.Request) {
	tb.Helper()
	future := time.Now().Add(72 * time.Hour).UTC().Format(time.RFC3339)
	full := map[string]any{"name": "GitHub", "server_label": "github", "server_url": "https://api.githubcopilot.com/mcp/",
		"server_description": "Issues and PRs", "allowed_tools": []string{"issues.list", "pulls.get"},
		"require_approval": "never", "metadata": map[string]string{"team": "core", "env": "prod"}}
	s1 := env.MustCreateServer(tb, "", full)
	s2 := env.MustCreateServer(tb, "alice", nil)
	s4 := env.MustCreateServer(tb, "", nil)
	r := env.Do(tb, vaulttest.Request{Method: "POST", Path: "/servers", Key: vaulttest.KeyB,
		Body: map[string]any{"name": "B's", "server_label": "b", "server_url": "https://b.example.com/mcp"}})
	if r.Status != http.StatusCreated {
		tb.Fatalf("create as B: %d %s", r.Status, r.Body)
	}
	s3 := r.JSON(tb)["id"].(string)
	mustOK := func(r vaulttest.Request) map[string]any {
		tb.Helper()
		resp := env.Do(tb, r)
		if resp.Status != http.StatusOK && resp.Status != http.StatusCreated {
			tb.Fatalf("%s %s: %d %s", r.Method, r.Path, resp.Status, resp.Body)
		}
		return resp.JSON(tb)
	}
	mustOK(vaulttest.Request{Method: "POST", Path: "/servers/" + s1, Body: map[string]any{"name": "GitHub (renamed)", "server_description": nil, "allowed_tools": nil}})
	mustOK(vaulttest.Request{Method: "POST", Path: "/servers/" + s2, User: "alice", Body: map[string]any{"metadata": map[string]string{"k": "v"}, "require_approval": "never"}})

	cred := func(user, sid string, body map[string]any) string {
		tb.Helper()
		return env.MustCreateCredential(tb, user, sid, body)["id"].(string)
	}
	cred("", s1, map[string]any{"name": "bearer", "bearer_token": "tok-bearer-0123456789", "expires_at": future})
	auth := cred("", s1, map[string]any{"name": "auth", "authorization": "Basic dXNlcjpwYXNzd29yZA=="})
	cred("", s1, map[string]any{"headers": map[string]string{"X-Api-Key": "key-123456", "X-Tenant": "t1"}})
	none := cred("", s1, map[string]any{"name": "none", "auth_type": "none"})
	ab := cred("alice", s2, map[string]any{"auth_type": "bearer", "bearer_token": "short"})
	cred("alice", s2, map[string]any{"name": "hdr", "headers": map[string]string{"Authorization-Extra": "x"}})
	r = env.Do(tb, vaulttest.Request{Method: "POST", Path: "/servers/" + s3 + "/credentials", Key: vaulttest.KeyB,
		Body: map[string]any{"authorization": "Token abcdefghijklmnop"}})
	if r.Status != http.StatusCreated {
		tb.Fatalf("credential as B: %d %s", r.Status, r.Body)
	}
	cred("", s4, map[string]any{"bearer_token": "doomed-token-123456"})
	cred("", s4, map[string]any{"headers": map[string]string{"X-Doomed": "yes"}})

	mustOK(vaulttest.Request{Method: "POST", Path: "/servers/" + s1 + "/credentials/" + auth + "/revoke"})
	mustOK(vaulttest.Request{Method: "DELETE", Path: "/servers/" + s1 + "/credentials/" + none})
	mustOK(vaulttest.Request{Method: "POST", Path: "/servers/" + s2 + "/credentials/" + ab + "/revoke", User: "alice"})
	mustOK(vaulttest.Request{Method: "DELETE", Path: "/servers/" + s4})

	// Bulk: servers with a credential each, some revoked, by 4 workers.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("bulk-%d", w)
			for i := range 60 {
				sid := env.MustCreateServer(tb, user, map[string]any{"name": fmt.Sprintf("bulk %d/%d", w, i), "server_label": "bulk", "server_url": "https://bulk.example.com/mcp"})
				c := env.MustCreateCredential(tb, user, sid, map[string]any{"bearer_token": fmt.Sprintf("bulk-token-%d-%d", w, i)})
				if i%5 == 0 {
					env.Do(tb, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/credentials/" + c["id"].(string) + "/revoke", User: user})
				}
			}
		}()
	}
	wg.Wait()

	return []vaulttest.Request{
		{Method: "GET", Path: "/servers?limit=100"},
		{Method: "GET", Path: "/servers?limit=100", User: "alice"},
		{Method: "GET", Path: "/servers?limit=100", Key: vaulttest.KeyB},
		{Method: "GET", Path: "/servers?limit=100", User: "bulk-0"},
		{Method: "GET", Path: "/servers/" + s1},
		{Method: "GET", Path: "/servers/" + s1 + "/credentials?limit=100"},
		{Method: "GET", Path: "/servers/" + s2 + "/credentials?limit=100", User: "alice"},
		{Method: "GET", Path: "/servers/" + s3 + "/credentials?limit=100", Key: vaulttest.KeyB},
		{Method: "GET", Path: "/servers/" + s4},
	}
}

// lcAnswers returns the status and body of each read, one per line.
func lcAnswers(tb testing.TB, env *vaulttest.Env, reads []vaulttest.Request) string {
	tb.Helper()
	var b strings.Builder
	for _, r := range reads {
		resp := env.Do(tb, r)
		fmt.Fprintf(&b, "%s %s as %q/%q: %d %s\n", r.Method, r.Path, r.Key, r.User, resp.Status, resp.Body)
	}
	return b.String()
}

// lcSameText fails with the first differing line when a != b.
func lcSameText(tb testing.TB, what, a, b string) {
	tb.Helper()
	if a == b {
		return
	}
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			tb.Fatalf("%s differs at line %d:\nbefore: %s\nafter:  %s", what, i+1, x, y)
		}
	}
}

// Stopping the vault, deleting the read model with its -wal and -shm and
// starting again rebuilds exactly the same content; the operator rebuild
// does too, into a new file while the API keeps serving, then swaps it in;
// the running projector carries on on the swapped contents.
func TestReplayRebuildsSameReadModel(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	reads := lcVariedState(t, env)
	lcWaitCaughtUp(t, env, env.ReadModel)
	before := lcDump(t, env.ReadModel)
	answers := lcAnswers(t, env, reads)
	events := lcLastSeq(t, env.NATSURL(), env.Stream)
	t.Logf("state: %d events, read model dump %d bytes", events, len(before))

	// 1. Delete the read model and start again.
	env.StopAPI()
	env.StopProjector()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(env.ReadModel + suffix); err != nil && suffix == "" {
			t.Fatal(err)
		}
	}
	start := time.Now()
	env.StartProjector()
	env.StartAPI() // waits until /readyz is 200
	lcWaitCaughtUp(t, env, env.ReadModel)
	t.Logf("replay after deleting the read model: %d events, ready in %s", events, time.Since(start).Round(time.Millisecond))
	lcSameText(t, "read model after replay", before, lcDump(t, env.ReadModel))
	lcSameText(t, "API answers after replay", answers, lcAnswers(t, env, reads))

	// 2. Operator rebuild while the API keeps serving reads.
	var logs vaulttest.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var progress bytes.Buffer
	stop := make(chan struct{})
	var served, failed atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	for _, r := range reads[4:6] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp := env.Do(t, r)
				served.Add(1)
				if resp.Status != http.StatusOK {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %d %s", r.Path, resp.Status, resp.Body))
				}
			}
		}()
	}
	for served.Load() == 0 {
		time.Sleep(time.Millisecond) // the readers are running before the rebuild starts
	}
	start = time.Now()
	rb := &service.Rebuild{NATSURL: env.NATSURL(), Stream: env.Stream, ReadModelPath: env.ReadModel, Log: log, Progress: &progress}
	err := rb.Run(context.Background())
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, logs.String())
	}
	t.Logf("operator rebuild: %d events in %s while serving %d reads (%d not 200)", events, took.Round(time.Millisecond), served.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("reads failed during the rebuild: %v", firstFailure.Load())
	}
	// The projector, idle (no write since the rebuild started), finds the
	// new file by itself (it looks every 0.5 s) and opens it.
	vaulttest.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(env.Logs.String(), "names a new file (a rebuild published it); opening it")
	})
	lcWaitCaughtUp(t, env, env.ReadModel)
	lcSameText(t, "read model after operator rebuild", before, lcDump(t, env.ReadModel))
	lcSameText(t, "API answers after operator rebuild", answers, lcAnswers(t, env, reads))

	// Plain progress lines in the log (Progress is not a terminal), ending
	// on every event applied; no progress bar drawn.
	lines := regexp.MustCompile(`msg="rebuild progress" applied=(\d+) total=(\d+)`).FindAllStringSubmatch(logs.String(), -1)
	if len(lines) == 0 {
		t.Fatalf("no progress lines in the rebuild log:\n%s", logs.String())
	}
	if last := lines[len(lines)-1]; last[1] != fmt.Sprint(events) || last[2] != fmt.Sprint(events) {
		t.Fatalf("last progress line %q, want applied=total=%d", last[0], events)
	}
	if progress.Len() != 0 {
		t.Fatalf("a progress bar was drawn on a non-terminal: %q", progress.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, "rebuild progress") {
			t.Logf("rebuild log: %s", l)
		}
	}

	// 3. A write after the rebuild is read back and projected: the running
	// projector carried on on the swapped contents.
	sid := env.MustCreateServer(t, "", map[string]any{"name": "after rebuild", "server_label": "after", "server_url": "https://after.example.com/mcp"})
	if g := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid}); g.Status != http.StatusOK || g.JSON(t)["name"] != "after rebuild" {
		t.Fatalf("GET after rebuild: %d %s", g.Status, g.Body)
	}
	lcWaitCaughtUp(t, env, env.ReadModel)
	if d := lcDump(t, env.ReadModel); !strings.Contains(d, "id="+sid+"|") || !strings.Contains(d, fmt.Sprintf("last_seq=%d|", events+1)) {
		t.Fatalf("the projector did not apply the write after the rebuild")
	}
}

// A rebuild while writes go on: what the live projector applied during the
// replay is caught up before the new file is published (under the live
// file's write lock), so each write is read back right after it is
// answered — before, during and after the swap — and the projector moves to
// the new file and goes on with it. The live path then links to the new
// generation, and the old generation's files are gone. Twice: from the
// plain file, then from the first generation.
func TestRebuildWhileWritesGoOn(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	dir, base := filepath.Dir(env.ReadModel), filepath.Base(env.ReadModel)
	var caught int64
	for round := 1; round <= 2; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var writes atomic.Int64
		var created sync.Map
		failures := make(chan string, 4)
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					resp := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers",
						Body: map[string]any{"name": name, "server_label": "l", "server_url": "https://w.example.com/mcp"}})
					if resp.Status != http.StatusCreated {
						failures <- fmt.Sprintf("create %s: %d %s", name, resp.Status, resp.Body)
						return
					}
					id := resp.JSON(t)["id"].(string)
					if g := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + id}); g.Status != http.StatusOK {
						failures <- fmt.Sprintf("read back %s after its create: %d %s", name, g.Status, g.Body)
						return
					}
					created.Store(id, name)
					writes.Add(1)
				}
			}()
		}
		// A writer that fails stops: the waits end then, and the failure is
		// reported below.
		vaulttest.Eventually(t, 10*time.Second, func() bool { return writes.Load() >= 20 || len(failures) > 0 })
		var logs vaulttest.SyncBuffer
		rb := &service.Rebuild{NATSURL: env.NATSURL(), Stream: env.Stream, ReadModelPath: env.ReadModel,
			Log: slog.New(slog.NewJSONHandler(&logs, nil)), Progress: io.Discard, BatchSize: 16}
		err := rb.Run(context.Background())
		after := writes.Load()
		vaulttest.Eventually(t, 10*time.Second, func() bool { return writes.Load() >= after+20 || len(failures) > 0 }) // writes go on after the swap
		close(stop)
		wg.Wait()
		close(failures)
		for f := range failures {
			t.Error(f)
		}
		if err != nil {
			t.Fatalf("rebuild %d: %v\n%s", round, err, logs.String())
		}
		var swapped struct {
			Caught int64  `json:"caught_up_events"`
			File   string `json:"file"`
		}
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"read model rebuilt and swapped in"`) {
				if err := json.Unmarshal([]byte(l), &swapped); err != nil {
					t.Fatal(err)
				}
			}
		}
		caught += swapped.Caught
		t.Logf("round %d: %d writes, %d of them during the rebuild caught up before the swap; now %s", round, writes.Load(), swapped.Caught, swapped.File)

		target, err := os.Readlink(env.ReadModel)
		if err != nil || target != filepath.Base(swapped.File) || !strings.HasPrefix(target, base+".gen-") {
			t.Fatalf("the read model path links to %q (%v), want the new generation %q", target, err, swapped.File)
		}
		var files []string
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), base) {
				files = append(files, e.Name())
			}
		}
		if want := []string{base, target, target + "-shm", target + "-wal"}; !slices.Equal(files, want) {
			t.Fatalf("read model files %v, want %v: the old generation's are left behind", files, want)
		}
		// Every write is in the new file, applied by the projector that
		// moved to it.
		lcWaitCaughtUp(t, env, env.ReadModel)
		dump := lcDump(t, env.ReadModel)
		created.Range(func(id, name any) bool {
			if !strings.Contains(dump, "id="+id.(string)+"|") {
				t.Errorf("server %s (%s) is missing from the rebuilt read model", id, name)
			}
			return true
		})
	}
	if caught == 0 {
		t.Fatal("no rebuild had writes to catch up before its swap: the test did not exercise the catch-up")
	}
}

// A live read model that has applied more than the stream holds (made from
// another stream, or before a restore) gives the rebuild nothing to catch
// up with: it publishes its file as a new read model (its own instance id)
// and says so, instead of waiting for events that will never come.
func TestRebuildOverAReadModelAheadOfTheStream(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	env.MustCreateServer(t, "", nil)
	lcWaitCaughtUp(t, env, env.ReadModel)
	env.StopAPI()
	env.StopProjector()
	last := lcLastSeq(t, env.NATSURL(), env.Stream)
	db, err := sql.Open("sqlite3", "file:"+env.ReadModel)
	if err != nil {
		t.Fatal(err)
	}
	var instance string
	if err := db.QueryRow("SELECT instance_id FROM read_model_instance WHERE id = 1").Scan(&instance); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE projector_state SET last_seq = ? WHERE id = 1", last+100); err != nil {
		t.Fatal(err)
	}
	db.Close()

	var logs vaulttest.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rb := &service.Rebuild{NATSURL: env.NATSURL(), Stream: env.Stream, ReadModelPath: env.ReadModel,
		Log: slog.New(slog.NewTextHandler(&logs, nil)), Progress: io.Discard}
	if err := rb.Run(ctx); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "was the stream restored?") {
		t.Fatalf("the rebuild did not say why it published a new read model:\n%s", logs.String())
	}
	if got := lcAppliedSeq(t, env.ReadModel); got != last {
		t.Fatalf("the read model path serves a file at %d, want the rebuilt one at %d", got, last)
	}
	db = lcOpenReadOnly(t, env.ReadModel)
	defer db.Close()
	var now string
	if err := db.QueryRow("SELECT instance_id FROM read_model_instance WHERE id = 1").Scan(&now); err != nil || now == instance {
		t.Fatalf("the rebuilt file's instance id is %q (%v), want a new one (the old file's is %q)", now, err, instance)
	}
}
