//go:build cluster

// Package clustertest holds the multi-node tests (make test-cluster): three
// nats-server processes on loopback (R3 streams, sync_interval always, the
// vault's NATS users) and two vault replicas, each an api and a projector
// process with its own read model. Nodes and processes are really killed
// (SIGKILL) or stopped (SIGTERM).
package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/internal/cluster"
	"github.com/mcpvault/vault/seal"
)

const (
	account = "acct_a"
	apiKey  = "sk-cluster-test-0123456789"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vault-cluster-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/api", "./cmd/projector", "./cmd/vault")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a running cluster: nodes and replicas A and B.
type env struct {
	t     *testing.T
	nodes *cluster.Nodes
	A, B  *cluster.Replica
	logs  *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	logs := &syncBuf{}
	nodes, err := cluster.StartNodes(cluster.NodeOptions{Dir: dir, Vault: filepath.Join(binDir, "vault"), Out: logs})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, nodes: nodes, logs: logs}
	t.Cleanup(func() {
		for _, r := range []*cluster.Replica{e.A, e.B} {
			if r != nil {
				r.Stop()
			}
		}
		nodes.Stop()
		if t.Failed() {
			t.Logf("logs (tail):\n%s", tail(logs.String(), 200))
		}
	})
	master := seal.NewKeySpec("k1")
	auditKeys := audit.NewKeySpec("a1") // shared: each projector verifies both APIs' events
	for i, name := range []string{"a", "b"} {
		r, err := cluster.NewReplica(cluster.ReplicaOptions{Name: "replica-" + name, Dir: filepath.Join(dir, "replica-"+name),
			BinDir: binDir, Nodes: nodes, APIKeys: account + ":" + apiKey, MasterKeys: master, AuditKeys: auditKeys, Out: logs,
			Env: []string{"VAULT_RATE_LIMIT=0", "VAULT_LOG_LEVEL=warn"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			e.A = r
		} else {
			e.B = r
		}
	}
	for _, r := range []*cluster.Replica{e.A, e.B} {
		if err := r.WaitReady(context.Background(), 90*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, tail(logs.String(), 100))
		}
	}
	// The cluster is up when both projectors follow the stream: /readyz of
	// an empty stream cannot tell (nothing to apply yet), so write through
	// each replica and wait until the other one serves it.
	for _, p := range [][2]*cluster.Replica{{e.A, e.B}, {e.B, e.A}} {
		srv := e.mustServer(p[0], "warmup")
		eventually(t, 60*time.Second, p[1].Name+" serves a write made through "+p[0].Name, func() bool {
			return do(context.Background(), p[1], "GET", "/servers/"+srv, "warmup", nil, nil).status == 200
		})
	}
	return e
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

var client = &http.Client{Timeout: 10 * time.Second}

type answer struct {
	status int
	body   []byte
	err    error
}

func (a answer) json() map[string]any {
	var m map[string]any
	json.Unmarshal(a.body, &m)
	return m
}

// do sends one request to replica r as user.
func do(ctx context.Context, r *cluster.Replica, method, path, user string, body any, hdr map[string]string) answer {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.URL+"/api/v1/llm/mcp"+path, rd)
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("X-On-Behalf-Of", user)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: b, err: err}
}

func (e *env) mustServer(r *cluster.Replica, user string) string {
	e.t.Helper()
	a := do(context.Background(), r, "POST", "/servers", user,
		map[string]any{"name": "S", "server_label": "s", "server_url": "https://mcp.example.com/mcp"}, nil)
	if a.status != 201 {
		e.t.Fatalf("create server: %d %v %s", a.status, a.err, a.body)
	}
	return a.json()["id"].(string)
}

// listAll returns every credential (raw JSON objects, in creation order) of
// server srv of user, read through r.
func listAll(t *testing.T, r *cluster.Replica, user, srv string) []map[string]any {
	t.Helper()
	var all []map[string]any
	after := ""
	for {
		path := "/servers/" + srv + "/credentials?limit=100&order=asc"
		if after != "" {
			path += "&after=" + after
		}
		a := do(context.Background(), r, "GET", path, user, nil, nil)
		if a.status != 200 {
			t.Fatalf("list via %s: %d %v %s", r.Name, a.status, a.err, a.body)
		}
		var page struct {
			Data    []map[string]any `json:"data"`
			HasMore bool             `json:"has_more"`
			LastID  string           `json:"last_id"`
		}
		if err := json.Unmarshal(a.body, &page); err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Data...)
		if !page.HasMore {
			return all
		}
		after = page.LastID
	}
}

// load is a create load: each client creates credentials under its own
// server, one logical create after another, each retried with its own
// Idempotency-Key until it is answered 201 (as a careful client does).
type load struct {
	mu      sync.Mutex
	acked   map[string]string // logical name -> credential id from the 201
	okTimes []time.Time       // completion time of every 201
	okStart []time.Time       // start of the attempt answered 201, same order
	slowest time.Duration     // longest time from a logical create's first attempt to its 201
	errs    map[string]int    // non-201 outcomes by kind
	pending int               // logical creates never answered 201
	servers []string
	user    string
}

// runLoad runs clients until stop is closed, then lets every started logical
// create finish (up to 60 s of retries). pick chooses the replica for a
// client's attempt.
func runLoad(e *env, clients int, stop <-chan struct{}, pick func(client, attempt int) *cluster.Replica) *load {
	l := &load{acked: map[string]string{}, errs: map[string]int{}, user: "loaduser"}
	for range clients {
		l.servers = append(l.servers, e.mustServer(e.A, l.user))
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("c%02d-%05d", c, i)
				giveUp := time.Time{}
				first := time.Now()
				for attempt := 0; ; attempt++ {
					select {
					case <-stop:
						if giveUp.IsZero() {
							giveUp = time.Now().Add(60 * time.Second)
						}
					default:
					}
					if !giveUp.IsZero() && time.Now().After(giveUp) {
						l.mu.Lock()
						l.pending++
						l.mu.Unlock()
						break
					}
					r := pick(c, attempt)
					sent := time.Now()
					a := do(context.Background(), r, "POST", "/servers/"+l.servers[c]+"/credentials", l.user,
						map[string]any{"name": name, "bearer_token": "tok-" + name + "-0123456789"},
						map[string]string{"Idempotency-Key": name})
					if a.err == nil && a.status == 201 {
						l.mu.Lock()
						id, _ := a.json()["id"].(string)
						if prev, ok := l.acked[name]; ok && prev != id {
							l.errs["201 with another id for the same key"]++
						}
						l.acked[name] = id
						l.okTimes = append(l.okTimes, time.Now())
						l.okStart = append(l.okStart, sent)
						l.slowest = max(l.slowest, time.Since(first))
						l.mu.Unlock()
						break
					}
					kind := "transport error"
					if a.err == nil {
						code, _ := a.json()["error"].(map[string]any)["code"].(string)
						kind = fmt.Sprintf("%d %s", a.status, code)
					}
					l.mu.Lock()
					l.errs[kind]++
					l.mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	<-stop
	wg.Wait()
	return l
}

// check reads every credential of the load through r and returns the
// acknowledged writes that are missing and the logical creates stored more
// than once.
func (l *load) check(t *testing.T, r *cluster.Replica) (lost, dups int, stored int) {
	t.Helper()
	byName := map[string][]string{}
	ids := map[string]bool{}
	for _, srv := range l.servers {
		for _, c := range listAll(t, r, l.user, srv) {
			name, id := c["name"].(string), c["id"].(string)
			byName[name] = append(byName[name], id)
			ids[id] = true
			stored++
		}
	}
	for name, id := range l.acked {
		if !ids[id] {
			lost++
			t.Errorf("acknowledged %s (%s) is not stored (read through %s)", name, id, r.Name)
		}
	}
	for name, got := range byName {
		if len(got) > 1 {
			dups++
			t.Errorf("logical create %s stored %d times: %v", name, len(got), got)
		}
	}
	return lost, dups, stored
}

// maxGap is the longest time between consecutive 201s within [from, to].
func (l *load) maxGap(from, to time.Time) (gap time.Duration, end time.Time) {
	l.mu.Lock()
	ts := append([]time.Time(nil), l.okTimes...)
	l.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	prev := from
	for _, t := range ts {
		if t.Before(from) || t.After(to) {
			continue
		}
		if d := t.Sub(prev); d > gap {
			gap, end = d, t
		}
		prev = t
	}
	return gap, end
}

// firstOKAfter is how long after t the first 201 came back for an attempt
// sent after t (-1 if none).
func (l *load) firstOKAfter(t time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	best := time.Duration(-1)
	for i, s := range l.okStart {
		if s.After(t) {
			if d := l.okTimes[i].Sub(t); best < 0 || d < best {
				best = d
			}
		}
	}
	return best
}

func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var kinds []string
	for k, n := range l.errs {
		kinds = append(kinds, fmt.Sprintf("%s x%d", k, n))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d acknowledged, %d never answered 201, slowest logical create %s; retried answers: %s",
		len(l.acked), l.pending, l.slowest.Round(10*time.Millisecond), strings.Join(kinds, ", "))
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readyz(r *cluster.Replica) (int, string) {
	resp, err := client.Get(r.URL + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
