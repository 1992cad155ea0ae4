package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpvault/vault/httpapi"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/service"
)

// repReplica is a second API process with its own read model and projector,
// on the stream of an Env.
type repReplica struct {
	*vaulttest.Env // only URL and Do are used
	ReadModel      string
	stopAPI        func()
	stopProj       func()
}

// repStartProjector runs a projector of env's stream into readModel until
// the returned stop.
func repStartProjector(tb testing.TB, env *vaulttest.Env, readModel, name string) func() {
	tb.Helper()
	p := &service.Projector{NATSURL: env.NATSURL(), Stream: env.Stream, ReadModelPath: readModel, Log: env.Logger(name + "-projector")}
	return repRun(tb, p.Run)
}

// repStartAPI runs an API on readModel (same keys as env) and waits until
// it is ready.
func repStartAPI(tb testing.TB, env *vaulttest.Env, readModel, name string) (*vaulttest.Env, func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := &service.API{Listener: ln, NATSURL: env.NATSURL(), Stream: env.Stream, ReadModelPath: readModel,
		Keys:       []httpapi.APIKey{{Account: "acct_a", Key: vaulttest.KeyA}, {Account: "acct_b", Key: vaulttest.KeyB}},
		MasterKeys: env.Keyring, Log: env.Logger(name + "-api")}
	stop := repRun(tb, a.Run)
	b := &vaulttest.Env{TB: tb, URL: "http://" + ln.Addr().String()}
	vaulttest.Eventually(tb, 20*time.Second, func() bool {
		resp, err := http.Get(b.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return b, stop
}

func repRun(tb testing.TB, run func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("stopping: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// repStartReplica starts replica name: projector and API on a read model
// of their own.
func repStartReplica(tb testing.TB, env *vaulttest.Env, name string) *repReplica {
	tb.Helper()
	path := filepath.Join(env.Dir, name+".sqlite")
	stopProj := repStartProjector(tb, env, path, name)
	b, stopAPI := repStartAPI(tb, env, path, name)
	return &repReplica{Env: b, ReadModel: path, stopAPI: stopAPI, stopProj: stopProj}
}

// repMetric is the value of an unlabelled metric on url's /metrics.
func repMetric(tb testing.TB, url, name string) float64 {
	tb.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return f
		}
	}
	tb.Fatalf("metric %s not found", name)
	return 0
}

// repSeq is the X-Vault-Sequence of a write's answer (false, after
// failing the test, when it has none).
func repSeq(tb testing.TB, r vaulttest.Response) (string, bool) {
	tb.Helper()
	s := r.Header.Get("X-Vault-Sequence")
	if n, err := strconv.ParseUint(s, 10, 64); err != nil || n == 0 {
		tb.Errorf("write answer without a valid X-Vault-Sequence (%q): %d %s", s, r.Status, r.Body)
		return "", false
	}
	return s, true
}

// repRounds writes through a and reads the write back through b, with
// X-Vault-Min-Sequence set from a's X-Vault-Sequence when header is set:
// rounds create-then-read rounds (alternately a server read with a get and a
// credential read with a list) by 4 workers. It returns the number of misses
// (reads that did not see the write or were not answered 200).
func repRounds(t *testing.T, a, b *vaulttest.Env, rounds int, prefix string, header bool) int64 {
	const workers = 4
	var misses, done atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("%s-%d", prefix, w)
			home := a.MustCreateServer(t, user, nil)
			miss := func(format string, args ...any) {
				if misses.Add(1) <= 10 {
					t.Errorf(user+": "+format, args...)
				}
			}
			for i := w; i < rounds; i += workers {
				name := fmt.Sprintf("%s-%d", prefix, i)
				if i%2 == 0 {
					c := a.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", User: user,
						Body: map[string]any{"name": name, "server_label": "l", "server_url": "https://example.com/mcp"}})
					if c.Status != http.StatusCreated {
						t.Errorf("create server: %d %s", c.Status, c.Body)
						return
					}
					sid := c.JSON(t)["id"].(string)
					seq, ok := repSeq(t, c)
					if !ok {
						return
					}
					g := b.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid, User: user,
						Header: repMinSeq(header, seq)})
					if g.Status != http.StatusOK || g.JSON(t)["name"] != name {
						miss("round %d: get server through the other replica: %d %s", i, g.Status, g.Body)
					}
				} else {
					c := a.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + home + "/credentials", User: user,
						Body: map[string]any{"name": name, "auth_type": "none"}})
					if c.Status != http.StatusCreated {
						t.Errorf("create credential: %d %s", c.Status, c.Body)
						return
					}
					cid := c.JSON(t)["id"].(string)
					seq, ok := repSeq(t, c)
					if !ok {
						return
					}
					l := b.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + home + "/credentials?order=desc&limit=5", User: user,
						Header: repMinSeq(header, seq)})
					if l.Status != http.StatusOK {
						miss("round %d: credential list through the other replica: %d %s", i, l.Status, l.Body)
						continue
					}
					data, _ := l.JSON(t)["data"].([]any)
					if len(data) == 0 || data[0].(map[string]any)["id"] != cid {
						miss("round %d: credential list through the other replica starts %v, want %s", i, data, cid)
					}
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if int(done.Load()) != rounds {
		t.Fatalf("only %d of %d rounds ran", done.Load(), rounds)
	}
	return misses.Load()
}

// repMinSeq is the X-Vault-Min-Sequence header of a read (none unless set).
func repMinSeq(set bool, seq string) map[string]string {
	if !set {
		return nil
	}
	return map[string]string{"X-Vault-Min-Sequence": seq}
}

// Two API processes, each with its own read model and projector, share one
// stream: a write answered by A is seen by a read sent to B with
// X-Vault-Min-Sequence = A's X-Vault-Sequence, 1,000 rounds without a miss.
// B's waiting reads are released by its projector's announcements (none
// ends in 503). Without the header, 200 more rounds through B miss nothing
// either (B then asks the stream).
func TestReadYourWritesAcrossReplicas(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	b := repStartReplica(t, env, "replica-b")
	start := time.Now()
	misses := repRounds(t, &vaulttest.Env{TB: t, URL: env.URL}, b.Env, 1000, "rep", true)
	waits := repMetric(t, b.URL, "vault_read_barrier_waits_total")
	woken := repMetric(t, b.URL, "vault_read_barrier_woken_total")
	fallbacks := repMetric(t, b.URL, "vault_read_barrier_fallback_reads_total")
	behind := repMetric(t, b.URL, "vault_read_barrier_behind_total")
	t.Logf("replicas: 1000 rounds written through A, read through B with X-Vault-Min-Sequence in %s: %d misses; B's reads waited %.0f times, %.0f released by an announcement, %.0f fallback reads, %.0f behind",
		time.Since(start).Round(time.Millisecond), misses, waits, woken, fallbacks, behind)
	if misses > 0 {
		t.Fatalf("%d reads through B missed the write answered by A", misses)
	}
	if behind > 0 {
		t.Fatalf("%.0f reads through B answered read_model_behind", behind)
	}
	if waits > 0 && woken == 0 {
		t.Fatalf("%.0f reads waited for B's read model but no announcement released any (%.0f fallback reads)", waits, fallbacks)
	}
	// Without the header, B asks the stream for its last sequence: still no miss.
	if misses := repRounds(t, &vaulttest.Env{TB: t, URL: env.URL}, b.Env, 200, "rep-plain", false); misses > 0 {
		t.Fatalf("%d reads through B without X-Vault-Min-Sequence missed the write answered by A", misses)
	}
}

// With the projector's announcements lost (the API listens on another
// instance id than the projector announces on), reads with
// X-Vault-Min-Sequence are still answered: the barrier's fallback reads the
// read model. A sequence the stream never reaches is 503 read_model_behind
// after the bound, and a malformed header is 400.
func TestMinSequenceWithoutAnnouncements(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	path := filepath.Join(env.Dir, "replica-c.sqlite")
	env.MustCreateServer(t, "deaf-first", nil)
	repStartProjector(t, env, path, "replica-c")
	// Once it has applied an event, the projector has read the file's id.
	vaulttest.Eventually(t, 20*time.Second, func() bool { return lcAppliedSeq(t, path) > 0 })
	// The projector has the file open (and its id cached): give the file
	// another id, which the API then reads and listens on.
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE read_model_instance SET instance_id = 'deaf' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c, _ := repStartAPI(t, env, path, "replica-c")

	misses := repRounds(t, &vaulttest.Env{TB: t, URL: env.URL}, c, 100, "deaf", true)
	if misses > 0 {
		t.Fatalf("%d reads missed the write with the announcements lost", misses)
	}
	if n := repMetric(t, c.URL, "vault_read_barrier_announcements_total"); n != 0 {
		t.Fatalf("%.0f announcements reached an API listening on another read model instance", n)
	}
	if n := repMetric(t, c.URL, "vault_read_barrier_fallback_reads_total"); n == 0 {
		t.Fatal("no fallback read: the reads cannot have waited for the read model")
	}

	sid := env.MustCreateServer(t, "deaf-x", nil)
	bad := c.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid, User: "deaf-x",
		Header: map[string]string{"X-Vault-Min-Sequence": "12x"}})
	apiMustError(t, bad, http.StatusBadRequest, "invalid_request_error", "X-Vault-Min-Sequence")
	begin := time.Now()
	far := c.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid, User: "deaf-x",
		Header: map[string]string{"X-Vault-Min-Sequence": "1000000000"}})
	took := time.Since(begin)
	if far.Status != http.StatusServiceUnavailable || !strings.Contains(string(far.Body), "read_model_behind") {
		t.Fatalf("read with a sequence the stream never reached: %d %s", far.Status, far.Body)
	}
	if took > 10*time.Second {
		t.Fatalf("read_model_behind after %s, want within the 5 s bound", took)
	}
}

// An idempotent replay carries the first answer's X-Vault-Sequence, so a
// client whose first answer was lost can still read its write through any
// replica with X-Vault-Min-Sequence.
func TestIdempotentReplayCarriesSequence(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	b := repStartReplica(t, env, "replica-idem")
	body := map[string]any{"name": "idem", "server_label": "l", "server_url": "https://example.com/mcp"}
	post := func() vaulttest.Response {
		return env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", User: "idem", Body: body,
			Header: map[string]string{"Idempotency-Key": "replay-seq-1"}})
	}
	first, again := post(), post()
	if first.Status != http.StatusCreated || again.Status != http.StatusCreated {
		t.Fatalf("create and replay: %d %s / %d %s", first.Status, first.Body, again.Status, again.Body)
	}
	if again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("second answer is not a replay: %v", again.Header)
	}
	seq, ok := repSeq(t, first)
	if !ok {
		return
	}
	if got := again.Header.Get("X-Vault-Sequence"); got != seq {
		t.Fatalf("replay X-Vault-Sequence %q, first answer %q", got, seq)
	}
	id := again.JSON(t)["id"].(string)
	g := b.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + id, User: "idem",
		Header: map[string]string{"X-Vault-Min-Sequence": again.Header.Get("X-Vault-Sequence")}})
	if g.Status != http.StatusOK || g.JSON(t)["name"] != "idem" {
		t.Fatalf("read through the other replica with the replay's sequence: %d %s", g.Status, g.Body)
	}
}

// A header-less read of a server tree waits only for that tree's events:
// with replica B's projector stopped, a write to one server (through A)
// leaves B's reads of another server answered at once, from its read
// model, while B's reads of the written server — and reads of any server
// that name the write's sequence in X-Vault-Min-Sequence — wait until B's
// projector, restarted, has applied the write, and then include it.
func TestTreeReadsWaitOnlyForTheirTree(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	a := &vaulttest.Env{TB: t, URL: env.URL}
	b := repStartReplica(t, env, "replica-b")
	quiet := a.MustCreateServer(t, "u-quiet", nil)
	quietCred := a.MustCreateCredential(t, "u-quiet", quiet, map[string]any{"name": "k", "auth_type": "none"})["id"].(string)
	busy := a.MustCreateServer(t, "u-busy", nil)
	// B has applied both servers (a header-less read through B waits for them).
	if r := b.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + busy, User: "u-busy"}); r.Status != http.StatusOK {
		t.Fatalf("get busy server through B: %d %s", r.Status, r.Body)
	}
	b.stopProj()
	c := a.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + busy + "/credentials", User: "u-busy",
		Body: map[string]any{"name": "new", "auth_type": "none"}})
	if c.Status != http.StatusCreated {
		t.Fatalf("create credential through A: %d %s", c.Status, c.Body)
	}
	created := c.JSON(t)["id"].(string)

	// Reads of the quiet server through B: answered at once, not after the
	// 5 s bound with 503 read_model_behind. The first one may wait a moment
	// for B's subject follower to deliver the write (until then B cannot
	// know which tree it changed); the three after it wait for nothing.
	if r := b.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + quiet, User: "u-quiet"}); r.Status != http.StatusOK {
		t.Fatalf("GET the quiet server through B with its projector stopped: %d %s", r.Status, r.Body)
	}
	unrelated0 := repMetric(t, b.URL, "vault_read_barrier_unrelated_total")
	start := time.Now()
	for _, path := range []string{"/servers/" + quiet, "/servers/" + quiet + "/credentials", "/servers/" + quiet + "/credentials/" + quietCred} {
		if r := b.Do(t, vaulttest.Request{Method: "GET", Path: path, User: "u-quiet"}); r.Status != http.StatusOK {
			t.Fatalf("GET %s through B with its projector stopped: %d %s", path, r.Status, r.Body)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("three reads of a server without unapplied events took %s", d)
	}
	if n := repMetric(t, b.URL, "vault_read_barrier_unrelated_total") - unrelated0; n < 3 {
		t.Fatalf("vault_read_barrier_unrelated_total rose by %.0f, want 3", n)
	}

	// A read of the busy server through B waits for the write, and so does
	// a read of the quiet one that names the write's sequence in
	// X-Vault-Min-Sequence (answered once the read model has applied it).
	seq, _ := repSeq(t, c)
	type answer struct {
		r   vaulttest.Response
		err error
	}
	send := func(r vaulttest.Request) <-chan answer {
		got := make(chan answer, 1)
		go func() {
			resp, err := vaulttest.Send(context.Background(), t, b.URL, r)
			got <- answer{resp, err}
		}()
		return got
	}
	gotBusy := send(vaulttest.Request{Method: "GET", Path: "/servers/" + busy + "/credentials", User: "u-busy"})
	gotNamed := send(vaulttest.Request{Method: "GET", Path: "/servers/" + quiet, User: "u-quiet", Header: repMinSeq(true, seq)})
	select {
	case ans := <-gotBusy:
		t.Fatalf("a read of the written server through B did not wait for B's stopped projector: %d %s (%v)", ans.r.Status, ans.r.Body, ans.err)
	case ans := <-gotNamed:
		t.Fatalf("a read naming the write's sequence did not wait for B's stopped projector: %d %s (%v)", ans.r.Status, ans.r.Body, ans.err)
	case <-time.After(time.Second):
	}
	repStartProjector(t, env, b.ReadModel, "replica-b-again")
	if ans := <-gotNamed; ans.err != nil || ans.r.Status != http.StatusOK {
		t.Fatalf("read of the quiet server naming the write's sequence through B: %d %s (%v)", ans.r.Status, ans.r.Body, ans.err)
	}
	ans := <-gotBusy
	if ans.err != nil || ans.r.Status != http.StatusOK {
		t.Fatalf("list of the written server through B: %d %s (%v)", ans.r.Status, ans.r.Body, ans.err)
	}
	data, _ := ans.r.JSON(t)["data"].([]any)
	if len(data) != 1 || data[0].(map[string]any)["id"] != created {
		t.Fatalf("list of the written server through B = %s, want the credential %s", ans.r.Body, created)
	}
}
