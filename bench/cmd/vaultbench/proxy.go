package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpvault/vault/bench/loadgen"
)

// The proxy phase measures what the MCP endpoint adds to a tools/call: the
// same go-sdk agents call the same go-sdk upstream (in this process, on
// loopback) straight and through the vault, in alternating rounds of the
// same run, 16 agents each with its own session. proxy_overhead_p50_ms and
// proxy_overhead_p99_ms are the differences of the percentiles (through
// minus straight), averaged over the rounds.

type echoIn struct {
	Text string `json:"text"`
}

// startEchoUpstream serves a go-sdk MCP server with one echo tool over
// Streamable HTTP, demanding a bearer token.
func startEchoUpstream(token string) (string, func(), error) {
	s := mcp.NewServer(&mcp.Implementation{Name: "bench-upstream", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echoes"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	want := "Bearer " + token
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/mcp", func() { _ = srv.Close() }, nil
}

// headerRT adds fixed headers to every request.
type headerRT struct {
	h    map[string]string
	base http.RoundTripper
}

func (t headerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.h {
		r.Header.Set(k, v)
	}
	return t.base.RoundTrip(r)
}

// connectAgents opens n go-sdk client sessions to endpoint.
func connectAgents(ctx context.Context, endpoint string, headers map[string]string, n int) ([]*mcp.ClientSession, error) {
	base := &http.Transport{MaxIdleConnsPerHost: 4 * n, MaxConnsPerHost: 0}
	var out []*mcp.ClientSession
	for range n {
		c := mcp.NewClient(&mcp.Implementation{Name: "bench-agent", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1,
			DisableStandaloneSSE: true, HTTPClient: &http.Client{Transport: headerRT{h: headers, base: base}}}, nil)
		if err != nil {
			for _, s := range out {
				s.Close()
			}
			return nil, err
		}
		out = append(out, cs)
	}
	return out, nil
}

func callEcho(sessions []*mcp.ClientSession) loadgen.Op {
	return func(ctx context.Context, i int) error {
		res, err := sessions[i%len(sessions)].CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "ping"}})
		if err != nil {
			return err
		}
		if res.IsError {
			return errors.New("tool error")
		}
		return nil
	}
}

// proxyTarget is a vault with the upstream registered and a credential.
type proxyTarget struct {
	URL      string
	ServerID string
}

func setUpProxyTarget(ctx context.Context, base, upstreamURL, token string) (proxyTarget, error) {
	body, _ := json.Marshal(map[string]any{"name": "bench", "server_label": "bench", "server_url": upstreamURL, "require_approval": "never"})
	var srv struct {
		ID string `json:"id"`
	}
	if err := call(ctx, base, "POST", "/servers", "", body, http.StatusCreated, &srv); err != nil {
		return proxyTarget{}, err
	}
	cred, _ := json.Marshal(map[string]any{"bearer_token": token})
	if err := call(ctx, base, "POST", "/servers/"+srv.ID+"/credentials", "", cred, http.StatusCreated, nil); err != nil {
		return proxyTarget{}, err
	}
	return proxyTarget{URL: base + apiPrefix + "/servers/" + srv.ID + "/mcp", ServerID: srv.ID}, nil
}

// proxy measures the MCP endpoint's overhead against bin/vault.
func (b *bench) proxy(ctx context.Context, bin string, conc int, warm, dur time.Duration) error {
	const token = "bench-upstream-token-0123456789"
	upURL, stop, err := startEchoUpstream(token)
	if err != nil {
		return err
	}
	defer stop()
	v, err := startVault(ctx, bin, filepath.Join(b.tmp, "proxy"), "always", "VAULT_ALLOW_PRIVATE_UPSTREAMS=true")
	if err != nil {
		return err
	}
	defer v.Stop()
	t, err := setUpProxyTarget(ctx, v.URL, upURL, token)
	if err != nil {
		return err
	}
	b.proxyCPU = proxyCPU{vaultPID: v.cmd.Process.Pid}
	straight, through, err := b.measureProxy(ctx, upURL, token, t.URL, conc, warm, dur)
	if err != nil {
		return err
	}
	b.reportProxy(straight, through)
	b.reportProxyCPU()
	b.proxyCPU = proxyCPU{}
	// Context: one agent alone, where no call queues behind another, so
	// the difference is the latency the vault adds to a call rather than
	// CPU contention at saturation.
	s1, t1, err := b.measureProxy(ctx, upURL, token, t.URL, 1, warm/2, dur/2)
	if err != nil {
		return err
	}
	p50 := func(r loadgen.Result) float64 { return r.P50Ms }
	p99 := func(r loadgen.Result) float64 { return r.P99Ms }
	b.fig("proxy_overhead_1agent_p50_ms", meanOf(t1, p50)-meanOf(s1, p50), "ms")
	b.fig("proxy_overhead_1agent_p99_ms", meanOf(t1, p99)-meanOf(s1, p99), "ms")
	b.fig("proxy_straight_1agent_p50_ms", meanOf(s1, p50), "ms")
	b.runs["proxy_1agent_straight"], b.runs["proxy_1agent_through"] = s1, t1
	return nil
}

// measureProxy runs alternating rounds straight and through the vault.
func (b *bench) measureProxy(ctx context.Context, upURL, token, vaultURL string, conc int, warm, dur time.Duration) ([]loadgen.Result, []loadgen.Result, error) {
	direct, err := connectAgents(ctx, upURL, map[string]string{"Authorization": "Bearer " + token}, conc)
	if err != nil {
		return nil, nil, fmt.Errorf("agents straight to the upstream: %w", err)
	}
	defer closeAll(direct)
	via, err := connectAgents(ctx, vaultURL, map[string]string{"Authorization": "Bearer " + benchKey}, conc)
	if err != nil {
		return nil, nil, fmt.Errorf("agents through the vault: %w", err)
	}
	defer closeAll(via)
	var straight, through []loadgen.Result
	const rounds = 2
	for r := range rounds {
		w := warm
		if r > 0 {
			w = warm / 4
		}
		s := b.proxyCPU.closed(ctx, false, loadgen.ClosedConfig{Concurrency: conc, Warmup: w, Duration: dur / rounds}, callEcho(direct))
		b.logf("proxy round %d straight: %s", r+1, s)
		t := b.proxyCPU.closed(ctx, true, loadgen.ClosedConfig{Concurrency: conc, Warmup: w, Duration: dur / rounds}, callEcho(via))
		b.logf("proxy round %d through the vault: %s", r+1, t)
		straight, through = append(straight, s), append(through, t)
	}
	return straight, through, nil
}

func closeAll(ss []*mcp.ClientSession) {
	for _, s := range ss {
		s.Close()
	}
}

func meanOf(rs []loadgen.Result, f func(loadgen.Result) float64) float64 {
	sum := 0.0
	for _, r := range rs {
		sum += f(r)
	}
	return sum / float64(len(rs))
}

func (b *bench) reportProxy(straight, through []loadgen.Result) {
	p50 := func(r loadgen.Result) float64 { return r.P50Ms }
	p99 := func(r loadgen.Result) float64 { return r.P99Ms }
	tput := func(r loadgen.Result) float64 { return r.Throughput }
	s50, t50 := meanOf(straight, p50), meanOf(through, p50)
	s99, t99 := meanOf(straight, p99), meanOf(through, p99)
	st50 := b.goal("proxy_overhead_p50_ms", t50-s50, "ms", "<= 0.5", 0.5, true)
	st99 := b.goal("proxy_overhead_p99_ms", t99-s99, "ms", "<= 2", 2, true)
	b.fig("proxy_straight_p50_ms", s50, "ms")
	b.fig("proxy_through_p50_ms", t50, "ms")
	b.fig("proxy_straight_p99_ms", s99, "ms")
	b.fig("proxy_through_p99_ms", t99, "ms")
	b.fig("proxy_through_calls_per_s", meanOf(through, tput), "calls/s")
	b.fig("proxy_straight_calls_per_s", meanOf(straight, tput), "calls/s")
	errs := 0
	for _, r := range through {
		errs += r.Errors
	}
	if errs > 0 {
		b.notes = append(b.notes, fmt.Sprintf("proxy: %d tools/call through the vault failed (first: %s)", errs, through[0].FirstError))
	}
	b.rows = append(b.rows,
		row{Measure: "tools/call overhead p50 (16 agents)", Ours: fmt.Sprintf("%.2f ms (%.2f vs %.2f)", t50-s50, t50, s50),
			Baseline: fmt.Sprintf("straight p50 %.2f ms", s50), Ratio: fmt.Sprintf("%.2fx", t50/s50), Target: "<= 0.5 ms", Status: st50},
		row{Measure: "tools/call overhead p99 (16 agents)", Ours: fmt.Sprintf("%.2f ms (%.2f vs %.2f)", t99-s99, t99, s99),
			Baseline: fmt.Sprintf("straight p99 %.2f ms", s99), Ratio: fmt.Sprintf("%.2fx", t99/s99), Target: "<= 2 ms", Status: st99})
	b.runs["proxy_straight"] = straight
	b.runs["proxy_through"] = through
}

// proxyProfile measures the same against an in-process vault under the CPU
// profiler (prefix-proxy.cpu.prof): the agents and the upstream share the
// process, so their cost is in the profile too; look at the vault's
// packages (mcpproxy, app, upstream, httpapi) and the SDK frames under them.
func (b *bench) proxyProfile(ctx context.Context, prefix string, conc int, warm, dur time.Duration) error {
	const token = "bench-upstream-token-0123456789"
	upURL, stop, err := startEchoUpstream(token)
	if err != nil {
		return err
	}
	defer stop()
	p, err := startInProcess(ctx, filepath.Join(b.tmp, "profile-proxy"), true)
	if err != nil {
		return err
	}
	defer p.Stop()
	t, err := setUpProxyTarget(ctx, p.URL, upURL, token)
	if err != nil {
		return err
	}
	var perr error
	err = profiled(prefix+"-proxy.cpu.prof", func() {
		var s, v []loadgen.Result
		s, v, perr = b.measureProxy(ctx, upURL, token, t.URL, conc, warm, dur)
		if perr == nil {
			b.runs["proxy_profile_straight"], b.runs["proxy_profile_through"] = s, v
		}
	})
	if err != nil {
		return err
	}
	b.logf("proxy CPU profile: %s-proxy.cpu.prof", prefix)
	return perr
}

// proxyCPU counts the CPU the calls cost, per call: the bench process's
// (the agents and the upstream, on both paths) and the vault's process tree
// (bin/vault, its NATS server, bin/api and bin/projector; through only).
// CPU per call is what other load on a shared machine barely changes, and
// at saturation a closed loop's latency is that CPU queued.
type proxyCPU struct {
	vaultPID                    int // 0: not measured
	straightCalls, throughCalls int64
	straightBench, throughBench time.Duration
	throughVault                time.Duration
	throughByProc               map[string]time.Duration
}

func (c *proxyCPU) closed(ctx context.Context, through bool, cfg loadgen.ClosedConfig, op loadgen.Op) loadgen.Result {
	if c.vaultPID == 0 {
		return loadgen.Closed(ctx, cfg, op)
	}
	var n atomic.Int64
	counted := func(ctx context.Context, i int) error { n.Add(1); return op(ctx, i) }
	_, bench0, _ := procStat(os.Getpid())
	vault0 := treeCPUs(c.vaultPID)
	r := loadgen.Closed(ctx, cfg, counted)
	_, bench1, _ := procStat(os.Getpid())
	vault1 := treeCPUs(c.vaultPID)
	if through {
		c.throughCalls += n.Load()
		c.throughBench += bench1 - bench0
		if c.throughByProc == nil {
			c.throughByProc = map[string]time.Duration{}
		}
		for name, t := range vault1 {
			c.throughVault += t - vault0[name]
			c.throughByProc[name] += t - vault0[name]
		}
	} else {
		c.straightCalls += n.Load()
		c.straightBench += bench1 - bench0
	}
	return r
}

func (b *bench) reportProxyCPU() {
	c := b.proxyCPU
	if c.straightCalls == 0 || c.throughCalls == 0 {
		return
	}
	per := func(d time.Duration, n int64) float64 { return float64(d.Microseconds()) / float64(n) }
	straight := per(c.straightBench, c.straightCalls)
	agents := per(c.throughBench, c.throughCalls)
	vault := per(c.throughVault, c.throughCalls)
	b.fig("proxy_straight_cpu_us_per_call", straight, "us")
	b.fig("proxy_through_agents_cpu_us_per_call", agents, "us")
	b.fig("proxy_through_vault_cpu_us_per_call", vault, "us")
	var procs []string
	for name, t := range c.throughByProc {
		if name == "vault" {
			// bin/vault run is the embedded NATS server's process; its
			// own name would collide with the vault total above.
			name = "nats"
		}
		b.fig("proxy_through_"+name+"_cpu_us_per_call", per(t, c.throughCalls), "us")
		procs = append(procs, fmt.Sprintf("%s %.0f µs", name, per(t, c.throughCalls)))
	}
	slices.Sort(procs)
	b.logf("proxy: CPU per call: straight %.0f µs (agents + upstream); through %.0f µs (agents + upstream) + %.0f µs (the vault's processes: %s)", straight, agents, vault, strings.Join(procs, ", "))
	b.rows = append(b.rows, row{Measure: "  CPU per tools/call (16 agents)",
		Ours:     fmt.Sprintf("through: agents+upstream %.0f µs + vault %.0f µs", agents, vault),
		Baseline: fmt.Sprintf("straight %.0f µs", straight), Ratio: fmt.Sprintf("%.2fx", (agents+vault)/straight)})
}
