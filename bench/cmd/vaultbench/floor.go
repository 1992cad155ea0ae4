package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpvault/vault/bench/loadgen"
	"github.com/mcpvault/vault/eventstore"
)

// The read floor: what the cheapest possible header-less read costs on this
// machine at the same offered rate. A process of its own (like bin/api)
// answers GET /nats with a fixed credential-sized JSON body after one
// stream-info request to the vault's own NATS server (what a read without
// X-Vault-Min-Sequence must ask: the stream's last sequence), and GET /http
// with the body alone. No SQLite, no authentication, no routing: the vault's
// reads cannot be faster than this, so the gap between the two is what the
// vault's own work adds.

const floorEnv = "VAULTBENCH_FLOOR"

// floorBody is the size of a credential's JSON answer.
var floorBody = []byte(`{"id":"mcp_cred_01KB0000000000000000000000","object":"mcp.credential","server_id":"mcp_srv_01KB0000000000000000000000","auth_type":"bearer","label":"user 0001","expires_at":null,"revoked_at":null,"last_used_at":null,"created_at":"2026-11-30T12:00:00.000Z","updated_at":"2026-11-30T12:00:00.000Z","secret_hint":"…abcd","owner":"u0001"}`)

// floorListBody is the size of a list page of 20 credentials.
var floorListBody = func() []byte {
	b := []byte(`{"object":"list","data":[`)
	for i := range 20 {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, floorBody...)
	}
	return append(b, `],"first_id":"mcp_cred_01KB0000000000000000000000","last_id":"mcp_cred_01KB0000000000000000000000","has_more":true}`...)
}()

// floorMain is the child process: VAULTBENCH_FLOOR=<listen addr>,
// VAULTBENCH_FLOOR_NATS=<nats url of the vault's api user>.
func floorMain(addr, natsURL string) {
	nc, err := eventstore.Connect(natsURL, "vaultbench-floor")
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /http", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(floorBody)
	})
	// /spin?us=N busies its goroutine for N µs, then answers: a server that
	// costs what a read costs, without I/O, locks or garbage (see
	// spinRuns).
	mux.HandleFunc("GET /spin", func(w http.ResponseWriter, r *http.Request) {
		us, _ := strconv.Atoi(r.URL.Query().Get("us"))
		for start := time.Now(); time.Since(start) < time.Duration(us)*time.Microsecond; {
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(floorBody)
	})
	// /nats asks the stream's info (what a read asks today); /msgget the
	// stream's last message through the JetStream API (what the leader
	// answers); /direct a direct get of it (any replica may answer).
	// /natslist is /nats answering a list page's bytes.
	for path, req := range map[string][2]string{
		"/nats":     {"$JS.API.STREAM.INFO.VAULT", ""},
		"/natslist": {"$JS.API.STREAM.INFO.VAULT", ""},
		"/msgget":   {"$JS.API.STREAM.MSG.GET.VAULT", `{"last_by_subj":">"}`},
		"/direct":   {"$JS.API.DIRECT.GET.VAULT", `{"last_by_subj":">"}`},
	} {
		body := floorBody
		if path == "/natslist" {
			body = floorListBody
		}
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			if _, err := nc.RequestWithContext(r.Context(), req[0], []byte(req[1])); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		})
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	_ = http.Serve(ln, mux)
}

// floorProc runs the floor server next to a vault.
type floorProc struct {
	cmd *exec.Cmd
	URL string
}

func startFloor(ctx context.Context, natsURL string) (*floorProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), floorEnv+"="+addr, floorEnv+"_NATS="+natsURL)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("floor server did not start: %q", line)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return &floorProc{cmd: cmd, URL: "http://" + addr}, nil
}

func (f *floorProc) Stop() {
	_ = f.cmd.Process.Kill()
	_ = f.cmd.Wait()
}

// floorOp is one GET of the floor server's path.
func floorOp(base, path string) loadgen.Op {
	return func(ctx context.Context, _ int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("floor %s: status %d", path, resp.StatusCode)
		}
		return nil
	}
}

// floorOpen offers path rate, open loop.
func floorOpen(ctx context.Context, base, path string, rate float64, warm, dur time.Duration) loadgen.Result {
	return loadgen.Open(ctx, loadgen.OpenConfig{Rate: rate, Warmup: warm, Duration: dur, Workers: 128}, floorOp(base, path))
}

// duringWrites runs f while background (the reads' creates) runs, started
// with it for f's warm-up and window, dur, and a little longer; it returns
// f's result and background's.
func duringWrites[T any](warm, dur time.Duration, background func(warm, dur time.Duration) loadgen.Result, f func() T) (T, loadgen.Result) {
	var wg sync.WaitGroup
	var bg loadgen.Result
	wg.Add(1)
	go func() { defer wg.Done(); bg = background(warm, dur+200*time.Millisecond) }()
	r := f()
	wg.Wait()
	return r, bg
}

// floorWithWrites offers path rate while background runs (duringWrites).
func floorWithWrites(ctx context.Context, base, path string, rate float64, warm, dur time.Duration, background func(warm, dur time.Duration) loadgen.Result) loadgen.Result {
	r, _ := duringWrites(warm, dur, background, func() loadgen.Result { return floorOpen(ctx, base, path, rate, warm, dur) })
	return r
}

// floorRuns offers the floor's paths the rates a get was offered: 70 % while
// the background creates run (each stream request), then 70 % and 10 %
// without writes (stream info, and HTTP alone).
func floorRuns(ctx context.Context, base string, rate70, rate10 float64, warm, dur time.Duration, background func(warm, dur time.Duration) loadgen.Result) map[string]loadgen.Result {
	out := map[string]loadgen.Result{}
	for _, path := range []string{"nats", "msgget", "direct"} {
		out[path+"_open70_writes"] = floorWithWrites(ctx, base, "/"+path, rate70, warm, dur, background)
	}
	for _, path := range []string{"nats", "http"} {
		out[path+"_open70"] = floorOpen(ctx, base, "/"+path, rate70, warm, dur)
		out[path+"_open10"] = floorOpen(ctx, base, "/"+path, rate10, warm, dur)
	}
	return out
}

// floorListRuns offers /natslist the rates a list page was offered: 70 %
// while the background creates run, and 10 % without writes.
func floorListRuns(ctx context.Context, base string, rate70, rate10 float64, warm, dur time.Duration, background func(warm, dur time.Duration) loadgen.Result) map[string]loadgen.Result {
	return map[string]loadgen.Result{
		"list_open70_writes": floorWithWrites(ctx, base, "/natslist", rate70, warm, dur, background),
		"list_open10":        floorOpen(ctx, base, "/natslist", rate10, warm, dur),
	}
}

// spinRuns measures /spin at the vault's CPU per get: its closed-loop
// maximum at conc, then 70 % of that maximum while background (the reads'
// creates on the vault) runs and without, and 10 %, open loop. Its spin
// is wall time, so a preempted request costs less than us of CPU: the
// floor is, if anything, easier than the vault's work. What it shows is
// what the machine does to a server that spends us per request and does
// nothing else, at the same shares of its own maximum as the reads.
func spinRuns(ctx context.Context, base string, us float64, conc int, warm, dur time.Duration, background func(warm, dur time.Duration) loadgen.Result) map[string]loadgen.Result {
	path := fmt.Sprintf("/spin?us=%.0f", us)
	out := map[string]loadgen.Result{}
	closed := loadgen.Closed(ctx, loadgen.ClosedConfig{Concurrency: conc, Warmup: warm, Duration: dur}, floorOp(base, path))
	out["spin_closed"] = closed
	if closed.Throughput <= 0 {
		return out
	}
	out["spin_open70_writes"] = floorWithWrites(ctx, base, path, 0.7*closed.Throughput, warm, dur, background)
	out["spin_open70"] = floorOpen(ctx, base, path, 0.7*closed.Throughput, warm, dur)
	out["spin_open10"] = floorOpen(ctx, base, path, 0.1*closed.Throughput, warm, dur)
	return out
}
