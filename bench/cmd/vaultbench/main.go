// Command vaultbench is `make bench`: it starts the real vault (bin/vault
// run, as `make run` does, with a temporary data dir and free ports), drives
// it over HTTP with the load generator of bench/loadgen, measures the raw
// speed of the parts underneath (JetStream publishes, SQLite inserts) in the
// same run, and prints each figure beside its baseline and target, one
// `BENCH <name> <value> <unit>` line per figure, and a JSON file of the run
// under bench/results/. See docs/benchmarks.md.
//
// Environment: BENCH_SECONDS (measured window of each load phase, default
// 10), BENCH_CONCURRENCY (default 16), BENCH_CATCHUP_EVENTS (default
// 100000), BENCH_LARGE=1 (adds the 1,000,000-event rebuild), BENCH_PROFILE=1
// (adds CPU profiles of an in-process vault), BENCH_KEEP=1 (keeps the
// temporary directory), BENCH_READ_ROUNDS (rounds of the reads' open loops,
// each figure the median round; default 3), BENCH_CATCHUP_ROUNDS (rounds of
// the 100,000-event catch-up and rebuild, each with its raw baseline, the
// median ratio reported; default 3).
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mcpvault/vault/bench/loadgen"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/service"
)

type config struct {
	Seconds       float64 `json:"seconds"`
	Concurrency   int     `json:"concurrency"`
	CatchupEvents int     `json:"catchup_events"`
	ReadUsers     int     `json:"read_users"`
	ReadPerUser   int     `json:"read_per_user"`
	ReadRounds    int     `json:"read_rounds"`
	CatchupRounds int     `json:"catchup_rounds"`
	Large         bool    `json:"large"`
	Profile       bool    `json:"profile"`
	Keep          bool    `json:"-"`
	// Only, when not empty, limits the run to these phases (BENCH_ONLY,
	// comma-separated: create, reads, proxy, proxy-profile, catchup, large, profile, readprofile).
	Only []string `json:"only,omitempty"`
}

func (c config) runs(phase string) bool {
	if len(c.Only) == 0 {
		switch phase {
		case "large":
			return c.Large
		case "profile", "readprofile", "proxy-profile":
			return c.Profile
		}
		return true
	}
	return slices.Contains(c.Only, phase)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func loadConfig() config {
	c := config{Seconds: 10, Concurrency: envInt("BENCH_CONCURRENCY", 16), CatchupEvents: envInt("BENCH_CATCHUP_EVENTS", 100000),
		ReadUsers: 1000, ReadPerUser: 100, ReadRounds: envInt("BENCH_READ_ROUNDS", 3),
		CatchupRounds: envInt("BENCH_CATCHUP_ROUNDS", 3),
		Large:         os.Getenv("BENCH_LARGE") == "1", Profile: os.Getenv("BENCH_PROFILE") == "1", Keep: os.Getenv("BENCH_KEEP") == "1"}
	if v := os.Getenv("BENCH_ONLY"); v != "" {
		c.Only = strings.Split(v, ",")
	}
	if v, err := strconv.ParseFloat(os.Getenv("BENCH_SECONDS"), 64); err == nil && v > 0 {
		c.Seconds = v
	}
	return c
}

// figure is one number of the run.
type figure struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target string  `json:"target,omitempty"`
	Status string  `json:"status,omitempty"` // met, MISSED, or empty for context figures
}

// row is one line of the printed table.
type row struct {
	Measure  string `json:"measure"`
	Ours     string `json:"ours"`
	Baseline string `json:"baseline,omitempty"`
	Ratio    string `json:"ratio,omitempty"`
	Target   string `json:"target,omitempty"`
	Status   string `json:"status,omitempty"`
}

type bench struct {
	load0    string // /proc/loadavg at the start
	cfg      config
	root     string
	tmp      string
	started  time.Time
	figures  []figure
	rows     []row
	runs     map[string]any
	notes    []string
	proxyCPU proxyCPU // CPU accounting of the proxy phase
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%5.0fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, args...))
}

func (b *bench) fig(name string, v float64, unit string) {
	b.figures = append(b.figures, figure{Name: name, Value: v, Unit: unit})
}

// goal records a figure with a target; atMost says whether lower is better.
func (b *bench) goal(name string, v float64, unit, target string, bound float64, atMost bool) string {
	met := v >= bound
	if atMost {
		met = v <= bound
	}
	status := "MISSED"
	if met {
		status = "met"
	}
	b.figures = append(b.figures, figure{Name: name, Value: v, Unit: unit, Target: target, Status: status})
	return status
}

func latency(r loadgen.Result) string {
	s := fmt.Sprintf("p50 %.2f / p99 %.2f ms", r.P50Ms, r.P99Ms)
	if r.Errors > 0 {
		s += fmt.Sprintf(", %d errors", r.Errors)
	}
	return s
}

func main() {
	if addr := os.Getenv(floorEnv); addr != "" {
		floorMain(addr, os.Getenv(floorEnv+"_NATS"))
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{cfg: loadConfig(), started: time.Now(), runs: map[string]any{}, load0: loadavg()}
	if err := b.main(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "vaultbench:", err)
		os.Exit(1)
	}
}

func (b *bench) main(ctx context.Context) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	b.root = root
	bin := filepath.Join(root, "bin", "vault")
	for _, name := range []string{"vault", "api", "projector"} {
		if _, err := os.Stat(filepath.Join(root, "bin", name)); err != nil {
			return fmt.Errorf("bin/%s missing: run `make build` (make bench does)", name)
		}
	}
	b.tmp, err = os.MkdirTemp("", "vaultbench-")
	if err != nil {
		return err
	}
	if b.cfg.Keep {
		b.logf("keeping %s", b.tmp)
	} else {
		defer os.RemoveAll(b.tmp)
	}
	stamp := b.started.UTC().Format("20060102T150405Z")
	resDir := filepath.Join(root, "bench", "results")
	if err := os.MkdirAll(resDir, 0o755); err != nil {
		return err
	}
	b.logf("vaultbench: %d CPUs, %s, window %.0fs, concurrency %d, large=%v, profile=%v, loadavg %s",
		runtime.NumCPU(), runtime.Version(), b.cfg.Seconds, b.cfg.Concurrency, b.cfg.Large, b.cfg.Profile, b.load0)

	runErr := b.phases(ctx, bin, filepath.Join(resDir, stamp))
	if runErr != nil {
		b.notes = append(b.notes, "run stopped early: "+runErr.Error())
	}
	b.print()
	path := filepath.Join(resDir, stamp+".json")
	if err := b.writeJSON(path); err != nil {
		return errors.Join(runErr, err)
	}
	fmt.Printf("\nresults: %s (%.0f s; loadavg at start %s, at end %s)\n", path, time.Since(b.started).Seconds(), b.load0, loadavg())
	return runErr
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/mcpvault/vault") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the repository (go.mod of github.com/mcpvault/vault not found)")
		}
		dir = parent
	}
}

func (b *bench) phases(ctx context.Context, bin, profilePrefix string) error {
	conc := b.cfg.Concurrency
	dur := time.Duration(b.cfg.Seconds * float64(time.Second))
	warm := 2 * time.Second

	// 1. and 5. Create credential over HTTP, beside raw publishes.
	if b.cfg.runs("create") {
		if err := b.creates(ctx, bin, conc, warm, dur); err != nil {
			return err
		}
	}
	// 4. Reads with 100,000 credentials across 1,000 owners.
	if b.cfg.runs("reads") {
		if err := b.reads(ctx, bin, conc, warm, dur/2); err != nil {
			return err
		}
	}
	// The MCP endpoint's overhead on a tools/call (bench/cmd/vaultbench/proxy.go).
	if b.cfg.runs("proxy") {
		if err := b.proxy(ctx, bin, conc, warm, dur); err != nil {
			return err
		}
	}
	if b.cfg.runs("proxy-profile") || b.cfg.Profile && len(b.cfg.Only) == 0 {
		if err := b.proxyProfile(ctx, profilePrefix, conc, warm, dur); err != nil {
			return err
		}
	}
	// 2. and 3. Projector catch-up and rebuild.
	if b.cfg.runs("catchup") {
		if err := b.catchup(ctx, "catchup", b.cfg.CatchupEvents, true, profilePrefix); err != nil {
			return err
		}
	}
	if b.cfg.runs("large") {
		if err := b.catchup(ctx, "large", 1000000, false, profilePrefix); err != nil {
			return err
		}
	}
	if b.cfg.runs("profile") {
		b.logf("CPU profiles of an in-process vault")
		res, err := profileRun(ctx, b.tmp, profilePrefix, conc, dur, b.logf)
		if err != nil {
			return err
		}
		for k, v := range res {
			b.runs[k] = v
		}
	}
	if b.cfg.runs("readprofile") {
		b.logf("CPU profiles and a trace of reads under background creates, in-process vault")
		res, err := profileReads(ctx, b.tmp, profilePrefix, conc, dur, b.logf)
		if err != nil {
			return err
		}
		for k, v := range res {
			b.runs[k] = v
		}
	}
	return nil
}

// creates measures figure 1 (and 5): createCredential over HTTP in both
// sync modes, each beside raw publishes to a stream with the same settings.
func (b *bench) creates(ctx context.Context, bin string, conc int, warm, dur time.Duration) error {
	creates := map[string]createRun{}
	raws := map[string]loadgen.Result{}
	atomics := map[string]map[int]loadgen.Result{}
	eventSize, keySize := 0, 0
	var open70 loadgen.Result
	modes := []string{"default", "always"}
	if v := os.Getenv("BENCH_CREATE_SYNC"); v == "default" || v == "always" {
		modes = []string{v} // a quicker A/B of one sync mode; the other's figures are zero
	}
	for _, mode := range modes {
		sync := map[string]string{"default": "2m", "always": "always"}[mode]
		var cr createRun
		b.logf("create credential, VAULT_NATS_SYNC=%s: starting bin/vault run", sync)
		v, err := startVault(ctx, bin, filepath.Join(b.tmp, "vault-"+mode), sync)
		if err != nil {
			return err
		}
		err = func() error {
			defer v.Stop()
			// Fresh servers for every variant, so that each starts with the
			// same number of credentials per server (none).
			owners, err := setupOwners(ctx, v.URL, "w", conc, 1)
			if err != nil {
				return err
			}
			rot, err := setupOwners(ctx, v.URL, "x", conc, 8)
			if err != nil {
				return err
			}
			cpu0, t0 := treeCPU(v.cmd.Process.Pid), time.Now()
			cr.main = createClosed(ctx, v.URL, owners, false, warm, dur)
			// The vault's CPU per create (warm-up included on both sides):
			// a cost the other load on a shared machine barely changes.
			perCreate := time.Duration(0)
			if n := cr.main.Throughput * time.Since(t0).Seconds(); n > 0 {
				perCreate = time.Duration(float64(treeCPU(v.cmd.Process.Pid)-cpu0) / n)
			}
			b.fig("create_"+mode+"_server_cpu_us", float64(perCreate.Microseconds()), "us")
			b.logf("  closed loop, %d owners each on one server: %s; vault CPU %s per create", conc, cr.main, perCreate.Round(time.Microsecond))
			cr.rotating = createClosed(ctx, v.URL, rot, true, warm, dur)
			b.logf("  closed loop, %d owners each rotating over 8 servers: %s", conc, cr.rotating)
			b.logf("  data-key pool so far: %s", poolStats(ctx, v.URL))
			b.runs["create_"+mode] = cr.main
			b.runs["create_"+mode+"_rotating"] = cr.rotating
			if mode != "default" {
				return nil
			}
			// Group commit is off by default; measure it, for the record.
			gv, err := startVault(ctx, bin, filepath.Join(b.tmp, "vault-"+mode+"-group"), sync, "VAULT_GROUP_COMMIT=true")
			if err != nil {
				return err
			}
			gowners, err := setupOwners(ctx, gv.URL, "g", conc, 1)
			if err == nil {
				cr.other = createClosed(ctx, gv.URL, gowners, false, warm, dur)
				b.logf("  closed loop, %d owners each on one server, VAULT_GROUP_COMMIT=true: %s", conc, cr.other)
				b.runs["create_default_group"] = cr.other
			}
			gv.Stop()
			if err != nil {
				return err
			}
			// One hot server: 16 clients storing credentials under one
			// server (one account-level integration, many end users).
			hot, err := setupOwners(ctx, v.URL, "h", 1, 1)
			if err != nil {
				return err
			}
			cr.hot = createClosed(ctx, v.URL, sameOwner(hot[0], conc), false, warm, dur)
			b.logf("  closed loop, %d clients on one server: %s", conc, cr.hot)
			b.runs["create_hot"] = cr.hot
			// The same on a server that already holds 100,000 credentials.
			fat, last, err := prefillFatServer(ctx, v.NATSURL, 100000)
			if err != nil {
				return err
			}
			if err := v.waitReady(ctx, 5*time.Minute, last); err != nil {
				return err
			}
			cr.fat = createClosed(ctx, v.URL, sameOwner(fat, conc), false, warm, dur)
			b.logf("  closed loop, %d clients on one server holding 100,000 credentials: %s", conc, cr.fat)
			b.runs["create_fat_server"] = cr.fat

			// 70 % of the maximum of the same workload: 16 owners each
			// rotating over 8 servers (128 servers). Until 2026-11-30 the
			// basis was the best of that and the 16-server loop; since the
			// data-key pool serves pairs written in quick succession, the
			// 16-server loop is faster than 128 servers can be, and 70 % of
			// it overloaded the open loop (docs/benchmarks.md).
			maxRate := cr.rotating.Throughput
			more, err := setupOwners(ctx, v.URL, "y", conc, 8)
			if err != nil {
				return err
			}
			open70 = createOpen(ctx, v.URL, more, 0.7*maxRate, warm, dur)
			b.logf("  open loop at 70%% of %.0f req/s: %s", maxRate, open70)
			b.logf("  data-key pool so far: %s", poolStats(ctx, v.URL))
			b.runs["create_default_open70"] = open70
			eventSize, keySize, err = storedSizes(ctx, v.NATSURL)
			return err
		}()
		if err != nil {
			return err
		}
		if mode == "always" {
			// Group commit is off by default; measure it with sync always,
			// where batches share fsyncs.
			nv, err := startVault(ctx, bin, filepath.Join(b.tmp, "vault-always-group"), sync, "VAULT_GROUP_COMMIT=true")
			if err != nil {
				return err
			}
			nowners, err := setupOwners(ctx, nv.URL, "n", conc, 1)
			if err == nil {
				cr.other = createClosed(ctx, nv.URL, nowners, false, warm, dur)
				b.logf("  closed loop, %d owners each on one server, VAULT_GROUP_COMMIT=true: %s", conc, cr.other)
				b.runs["create_always_group"] = cr.other
			}
			nv.Stop()
			if err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		creates[mode] = cr

		b.logf("raw JetStream publish, %s sync (embedded server in the bench process), %d-byte messages", mode, eventSize)
		r, err := startRaw(ctx, filepath.Join(b.tmp, "raw-"+mode), mode == "always")
		if err != nil {
			return err
		}
		raws[mode] = rawPublish(ctx, r, conc, eventSize, warm, dur)
		b.logf("  %d publishers: %s", conc, raws[mode])
		b.runs["raw_pub_"+mode] = raws[mode]
		atomics[mode] = map[int]loadgen.Result{}
		for _, size := range []int{8, 100} {
			pubs := map[int]int{8: 2, 100: 4}[size]
			ab, err := rawAtomicBatch(ctx, r, pubs, size, eventSize, time.Second, dur/3)
			if err != nil {
				b.notes = append(b.notes, "atomic batch publish: "+err.Error())
				break
			}
			atomics[mode][size] = ab
			b.runs[fmt.Sprintf("raw_atomic%d_%s", size, mode)] = ab
			b.logf("  atomic batches of %d, %d publishers: %.0f msg/s (%s)", size, pubs, float64(size)*ab.Throughput, ab)
		}
		r.Close()
	}
	b.reportCreates(creates["default"], raws["default"], atomics["default"], "default (2m)", "default", 0.5)
	b.reportCreates(creates["always"], raws["always"], atomics["always"], "always", "always", 1.0)
	b.fig("event_bytes", float64(eventSize), "bytes")
	b.fig("wrapped_key_bytes", float64(keySize), "bytes")
	b.fig("create_open70_rate", open70.TargetRate, "req/s")
	b.fig("create_open70_p50_ms", open70.P50Ms, "ms")
	st := b.goal("create_open70_p99_ms", open70.P99Ms, "ms", "<= 10", 10, true)
	b.rows = append(b.rows, row{fmt.Sprintf("create, open loop at 70%% of max (%.0f req/s offered), default sync", open70.TargetRate),
		latency(open70), "", "", "p99 ≤ 10 ms", st})
	return nil
}

// createRun holds the create figures of one sync mode; other is the same
// load with group commit on.
type createRun struct{ main, rotating, hot, fat, other loadgen.Result }

func (b *bench) reportCreates(cr createRun, raw loadgen.Result, atomics map[int]loadgen.Result, label, mode string, bound float64) {
	main := cr.main
	p := "create_" + mode
	b.fig(p+"_rps", main.Throughput, "req/s")
	b.fig(p+"_p50_ms", main.P50Ms, "ms")
	b.fig(p+"_p99_ms", main.P99Ms, "ms")
	b.fig(p+"_rotating_rps", cr.rotating.Throughput, "req/s")
	b.fig(p+"_rotating_p99_ms", cr.rotating.P99Ms, "ms")
	b.fig("raw_pub_"+mode+"_rps", raw.Throughput, "msg/s")
	b.fig("raw_pub_"+mode+"_p50_ms", raw.P50Ms, "ms")
	b.fig("raw_pub_"+mode+"_p99_ms", raw.P99Ms, "ms")
	ratio := func(r loadgen.Result) float64 {
		if raw.Throughput > 0 {
			return r.Throughput / raw.Throughput
		}
		return 0
	}
	target := fmt.Sprintf(">= %.1f", bound)
	st := b.goal("r_pub_"+mode, ratio(main), "ratio", target, bound, false)
	b.rows = append(b.rows, row{fmt.Sprintf("create credential, %d concurrent, sync %s", main.Concurrency, label),
		fmt.Sprintf("%.0f req/s, %s", main.Throughput, latency(main)),
		fmt.Sprintf("raw publish %.0f msg/s, %s", raw.Throughput, latency(raw)),
		fmt.Sprintf("R_pub %.2f", ratio(main)), "R_pub " + strings.Replace(target, ">=", "≥", 1), st})
	b.fig("create_"+mode+"_group_rps", cr.other.Throughput, "req/s")
	b.rows = append(b.rows, row{"  same, VAULT_GROUP_COMMIT=true",
		fmt.Sprintf("%.0f req/s, %s", cr.other.Throughput, latency(cr.other)), "", fmt.Sprintf("%.2f", ratio(cr.other)), "", ""})
	b.rows = append(b.rows, row{"  same, each owner rotating over 8 servers",
		fmt.Sprintf("%.0f req/s, %s", cr.rotating.Throughput, latency(cr.rotating)), "", fmt.Sprintf("%.2f", ratio(cr.rotating)), "", ""})
	if mode == "default" {
		for _, v := range []struct {
			name, label string
			r           loadgen.Result
		}{
			{"create_hot_rps", fmt.Sprintf("  same, %d clients on ONE server", main.Concurrency), cr.hot},
			{"create_fat_server_rps", fmt.Sprintf("  same, %d clients on one server holding 100,000 credentials", main.Concurrency), cr.fat},
		} {
			rel := 0.0
			if main.Throughput > 0 {
				rel = v.r.Throughput / main.Throughput
			}
			st := b.goal(v.name, v.r.Throughput, "req/s", fmt.Sprintf(">= %.0f (0.8 x create_default_rps), 0 errors", 0.8*main.Throughput),
				0.8*main.Throughput, false)
			if v.r.Errors > 0 {
				st = "MISSED"
				b.figures[len(b.figures)-1].Status = st
			}
			b.fig(strings.TrimSuffix(v.name, "_rps")+"_errors", float64(v.r.Errors), "requests")
			b.fig(strings.TrimSuffix(v.name, "_rps")+"_p99_ms", v.r.P99Ms, "ms")
			b.rows = append(b.rows, row{v.label, fmt.Sprintf("%.0f req/s, %s, %d errors", v.r.Throughput, latency(v.r), v.r.Errors),
				"create_default_rps", fmt.Sprintf("%.2f", rel), "≥ 0.8, 0 errors", st})
		}
	}
	for _, size := range []int{8, 100} {
		a, ok := atomics[size]
		if !ok {
			continue
		}
		b.fig(fmt.Sprintf("raw_atomic%d_%s_msgs", size, mode), float64(size)*a.Throughput, "msg/s")
		b.rows = append(b.rows, row{fmt.Sprintf("  raw atomic batch publish, %d/batch, %d publishers", size, a.Concurrency), "",
			fmt.Sprintf("%.0f msg/s, commit %s", float64(size)*a.Throughput, latency(a)), "", "", ""})
	}
}

func (b *bench) reads(ctx context.Context, bin string, conc int, warm, dur time.Duration) error {
	users, per := b.cfg.ReadUsers, b.cfg.ReadPerUser
	b.logf("reads: starting bin/vault run and prefilling %d credentials across %d owners through the stream", users*per, users)
	v, err := startVault(ctx, bin, filepath.Join(b.tmp, "vault-reads"), "2m")
	if err != nil {
		return err
	}
	defer v.Stop()
	nc, err := eventstore.Connect(v.NATSURL, "vaultbench-prefill")
	if err != nil {
		return err
	}
	st, err := eventstore.Open(ctx, nc, eventstore.Config{Stream: "VAULT"})
	if err != nil {
		nc.Close()
		return err
	}
	fx, msgs := buildFixtures("r", users, per)
	start := time.Now()
	last, err := publishAll(ctx, st, msgs)
	nc.Close()
	if err != nil {
		return err
	}
	if err := v.waitReady(ctx, 5*time.Minute, last); err != nil {
		return err
	}
	b.logf("  %d events published and applied by bin/projector in %.1fs", last, time.Since(start).Seconds())

	// The background write load: 10 % of the max create rate, measured here
	// on this vault (closed loop, owners of their own).
	writers, err := setupOwners(ctx, v.URL, "z", conc, 8)
	if err != nil {
		return err
	}
	cmax := createClosed(ctx, v.URL, writers, true, warm/2, dur/2)
	createRate := 0.1 * cmax.Throughput
	b.logf("  create max on this vault %.0f req/s (%s): background load %.0f req/s", cmax.Throughput, latency(cmax), createRate)
	b.runs["read_create_closed"] = cmax
	b.fig("read_background_create_rps", createRate, "req/s")
	background := func(w, d time.Duration) loadgen.Result {
		return createOpen(ctx, v.URL, writers, createRate, w, d)
	}
	maxRPS, cpuUS := map[string]float64{}, map[string]float64{}
	for _, k := range []struct {
		name, label string
		op          loadgen.Op
	}{
		{"get", "get credential", getOp(v.URL, fx)},
		{"list", "list credentials (first page of 20)", listOp(v.URL, fx)},
	} {
		r := readSeries(ctx, k.op, conc, b.cfg.ReadRounds, warm/2, dur, background, func() time.Duration { return treeCPU(v.cmd.Process.Pid) },
			func() waitSnapshot { return readWaits(ctx, v.URL) })
		b.logf("  %s: closed %s", k.name, r.closed)
		b.logf("  %s: open at 70%% with creates at %.0f req/s: %s (creates: %s)", k.name, createRate, r.open70, r.background)
		b.logf("    reads: %s", r.waits70)
		b.logf("  %s: open at 70%% without writes: %s", k.name, r.open70quiet)
		b.logf("    reads: %s", r.waits70quiet)
		b.logf("  %s: open at 10%%: %s", k.name, r.open10)
		b.logf("    reads: %s", r.waits10)
		for _, run := range []string{"open70", "open70_nowrites", "open10"} {
			b.logf("  %s: %s p99 of the %d rounds %s ms (the median round is reported)", k.name, run, len(r.p99s[run]), joinMs(r.p99s[run]))
		}
		b.runs["read_"+k.name+"_closed"] = r.closed
		b.runs["read_"+k.name+"_open70"] = r.open70
		b.runs["read_"+k.name+"_open70_background"] = r.background
		b.runs["read_"+k.name+"_open70_nowrites"] = r.open70quiet
		b.runs["read_"+k.name+"_open10"] = r.open10
		p := "read_" + k.name
		maxRPS[k.name] = r.closed.Throughput
		cpuUS[k.name] = float64(r.cpuPerReq.Microseconds())
		b.fig(p+"_server_cpu_us", cpuUS[k.name], "us/req")
		b.logf("  %s: the vault's CPU per request in the closed loop: %.0f µs", k.name, cpuUS[k.name])
		b.fig(p+"_max_rps", r.closed.Throughput, "req/s")
		b.fig(p+"_closed_p99_ms", r.closed.P99Ms, "ms")
		b.fig(p+"_open70_p50_ms", r.open70.P50Ms, "ms")
		st := b.goal(p+"_open70_p99_ms", r.open70.P99Ms, "ms", "<= 5", 5, true)
		b.fig(p+"_open70_nowrites_p99_ms", r.open70quiet.P99Ms, "ms")
		ratio := 0.0
		if r.open70quiet.P99Ms > 0 {
			ratio = r.open70.P99Ms / r.open70quiet.P99Ms
		}
		wst := b.goal(p+"_open70_write_ratio", ratio, "ratio", "<= 2", 2, true)
		b.fig(p+"_open70_background_p99_ms", r.background.P99Ms, "ms")
		b.fig(p+"_open10_p50_ms", r.open10.P50Ms, "ms")
		lst := b.goal(p+"_open10_p99_ms", r.open10.P99Ms, "ms", "<= 3", 3, true)
		b.rows = append(b.rows, row{fmt.Sprintf("%s, %d owners × %d, open loop at 70%% of max, creates at %.0f req/s (10%% of max)", k.label, users, per, createRate),
			fmt.Sprintf("%s at %.0f req/s", latency(r.open70), r.open70.TargetRate),
			"", "", "p99 ≤ 5 ms", st})
		b.rows = append(b.rows, row{"  same without writes",
			fmt.Sprintf("%s at %.0f req/s", latency(r.open70quiet), r.open70quiet.TargetRate), "",
			fmt.Sprintf("with/without %.2f×", ratio), "≤ 2×", wst})
		b.rows = append(b.rows, row{"  same, open loop at 10% of max (light load), no writes",
			fmt.Sprintf("%s at %.0f req/s", latency(r.open10), r.open10.TargetRate), "", "", "p99 ≤ 3 ms", lst})
		b.rows = append(b.rows, row{fmt.Sprintf("  same, closed loop %d concurrent (max)", conc),
			fmt.Sprintf("%.0f req/s, %s", r.closed.Throughput, latency(r.closed)), "", "", "", ""})
	}
	if maxRPS["get"] > 0 {
		ratio := maxRPS["list"] / maxRPS["get"]
		st := b.goal("read_list_get_rps_ratio", ratio, "ratio", ">= 0.5", 0.5, false)
		b.rows = append(b.rows, row{"list max rate / get max rate", fmt.Sprintf("%.2f", ratio), "", "", "≥ 0.5", st})
	}
	if cpuUS["list"] > 0 {
		// The same comparison by cost: the vault's CPU per get ÷ per list
		// page (robust to other load on a shared machine).
		ratio := cpuUS["get"] / cpuUS["list"]
		b.fig("read_list_get_cpu_ratio", ratio, "ratio")
		b.rows = append(b.rows, row{"vault CPU per get / per list page (closed loop)",
			fmt.Sprintf("%.2f (get %.0f µs, list %.0f µs)", ratio, cpuUS["get"], cpuUS["list"]), "", "", "", ""})
	}
	// The floor: the cheapest read this machine can answer at the get's
	// rates (one HTTP hop and one stream request, in a process of its own).
	if maxRPS["get"] > 0 {
		if f, err := startFloor(ctx, v.NATSURL); err != nil {
			b.logf("  floor server: %v", err)
		} else {
			fl := floorRuns(ctx, f.URL, 0.7*maxRPS["get"], 0.1*maxRPS["get"], warm/2, dur, background)
			if maxRPS["list"] > 0 {
				// The same for a list page's bytes at the list's rates.
				maps.Copy(fl, floorListRuns(ctx, f.URL, 0.7*maxRPS["list"], 0.1*maxRPS["list"], warm/2, dur, background))
			}
			// A server that only spends the get's CPU, at its own rates.
			spin := spinRuns(ctx, f.URL, cpuUS["get"], conc, warm/2, dur, background)
			maps.Copy(fl, spin)
			f.Stop()
			if c := spin["spin_closed"]; c.Throughput > 0 {
				b.fig("read_floor_spin_max_rps", c.Throughput, "req/s")
				b.logf("  floor: a server spinning %.0f µs per request (the get's CPU), closed loop of %d: %s", cpuUS["get"], conc, c)
			}
			for _, k := range []struct{ key, label string }{
				{"nats_open70_writes", "floor: HTTP + one stream request, 70% of the get's max, creates at 10%"},
				{"msgget_open70_writes", "  the same with a message get of the last message (leader)"},
				{"direct_open70_writes", "  the same with a direct get of the last message (any replica)"},
				{"nats_open70", "floor: HTTP + one stream request, 70% of the get's max"},
				{"nats_open10", "floor: HTTP + one stream request, 10% of the get's max"},
				{"http_open70", "floor: HTTP alone, 70% of the get's max"},
				{"http_open10", "floor: HTTP alone, 10% of the get's max"},
				{"list_open70_writes", "floor: HTTP + one stream request answering a list page's bytes, 70% of the list's max, creates at 10%"},
				{"list_open10", "floor: the same, 10% of the list's max"},
				{"spin_open70_writes", "floor: a server spinning the get's CPU per request, 70% of its own max, creates at 10% on the vault"},
				{"spin_open70", "floor: the same without writes"},
				{"spin_open10", "floor: the same, 10% of its own max"},
			} {
				r, ok := fl[k.key]
				if !ok {
					continue
				}
				b.logf("  %s: %s", k.label, r)
				b.runs["read_floor_"+k.key] = r
				b.fig("read_floor_"+k.key+"_p99_ms", r.P99Ms, "ms")
				b.rows = append(b.rows, row{"  " + k.label, fmt.Sprintf("%s at %.0f req/s", latency(r), r.TargetRate), "", "", "", ""})
			}
		}
	}
	// Reads that name the sequence they need (X-Vault-Min-Sequence) skip
	// the stream round trip: the same get at 70 %, with the background creates.
	if maxRPS["get"] > 0 {
		op := getMinSeqOp(v.URL, fx, last)
		ms, bg := duringWrites(warm/2, dur, background, func() loadgen.Result {
			return loadgen.Open(ctx, loadgen.OpenConfig{Rate: 0.7 * maxRPS["get"], Warmup: warm / 2, Duration: dur, Workers: 128}, op)
		})
		b.logf("  get with X-Vault-Min-Sequence: open at 70%% with creates: %s (creates: %s)", ms, bg)
		b.runs["read_get_minseq_open70"] = ms
		b.fig("read_get_minseq_open70_p99_ms", ms.P99Ms, "ms")
		b.rows = append(b.rows, row{"  get with X-Vault-Min-Sequence, 70% of max, creates at 10%",
			fmt.Sprintf("%s at %.0f req/s", latency(ms), ms.TargetRate), "", "", "", ""})
	}
	return nil
}

// catchup prefills an embedded stream with n events (servers and their
// credentials), then times the real projector (when projector is set) and
// service.Rebuild applying them into empty read models, beside raw batched
// inserts of the same rows.
func (b *bench) catchup(ctx context.Context, name string, n int, projector bool, profilePrefix string) error {
	users := 100
	if n >= 1000000 {
		users = 1000
	}
	per := max(n/users-1, 1)
	dir := filepath.Join(b.tmp, name)
	r, err := startRaw(ctx, filepath.Join(dir, "jetstream"), false)
	if err != nil {
		return err
	}
	defer r.Close()
	_, msgs := buildFixtures("p", users, per)
	b.logf("%s: publishing %d events (%d servers, %d credentials each)", name, len(msgs), users, per)
	t0 := time.Now()
	total, err := publishAll(ctx, r.st, msgs)
	if err != nil {
		return err
	}
	b.logf("  published in %.1fs", time.Since(t0).Seconds())
	rows, err := rowsOf(msgs)
	if err != nil {
		return err
	}
	msgs = nil
	url := r.srv.ClientURL()
	label := fmt.Sprintf("%dk", n/1000)
	if n >= 1000000 {
		label = fmt.Sprintf("%dm", n/1000000)
	}
	// profiledRound runs f, an extra round that is not counted, under the
	// CPU profiler and the execution tracer; without BENCH_PROFILE, not at
	// all.
	profiledRound := func(what string, f func() error) error {
		if !b.cfg.Profile {
			return nil
		}
		var ferr error
		path := profilePrefix + "-" + what + ".cpu.prof"
		tpath := profilePrefix + "-" + what + ".trace"
		// And an execution trace: where the goroutines wait
		// (go tool trace -pprof=sched).
		if err := profiled(path, func() {
			if err := traced(tpath, func() { ferr = f() }); err != nil && ferr == nil {
				ferr = err
			}
		}); err != nil {
			return err
		}
		b.logf("  profile: %s, trace: %s", path, tpath)
		return ferr
	}
	// Rounds, each ours and its baseline one after the other, so that a
	// drift of the shared host's speed lands on both: the figures are the
	// round whose ratio is the median. A profiled run is an extra round
	// before them, not counted (the profiler slows it).
	rounds := b.cfg.CatchupRounds
	if n >= 1000000 {
		rounds = 1
	}
	if projector {
		if err := profiledRound("projector", func() error {
			took, err := projectorCatchup(ctx, url, filepath.Join(dir, "projector-profiled.sqlite"), total)
			b.logf("  profiled projector catch-up (not counted): %.2fs", took.Seconds())
			return err
		}); err != nil {
			return err
		}
		var rs []catchupRound
		for i := range rounds {
			var c catchupRound
			cpu0 := processCPU()
			var err error
			c.took, err = projectorCatchup(ctx, url, filepath.Join(dir, fmt.Sprintf("projector-%d.sqlite", i+1)), total)
			if err != nil {
				return err
			}
			// The bench process holds the NATS server and the projector:
			// the cores it kept busy say whether the catch-up is bound by
			// the CPU.
			c.cpu = processCPU() - cpu0
			// As many rows per transaction as the projector applies at most.
			cpu0 = processCPU()
			c.raw, err = rawFile(ctx, filepath.Join(dir, fmt.Sprintf("raw-%d.sqlite", i)), rows, service.DefaultBatchSize)
			if err != nil {
				return err
			}
			c.rawCPU = processCPU() - cpu0
			c.eps, c.rps = float64(total)/c.took.Seconds(), float64(len(rows))/c.raw.Seconds()
			b.logf("  round %d/%d: projector (service.Projector) %d events in %.2fs = %.0f events/s, CPU (NATS server and projector) %.2fs = %.2f cores, %.0f µs an event; "+
				"raw go-sqlite3 file insert, %d rows/tx, %.2fs = %.0f rows/s, CPU %.2f cores; r_proj %.3f",
				i+1, rounds, total, c.took.Seconds(), c.eps, c.cpu.Seconds(), c.cpu.Seconds()/c.took.Seconds(), float64(c.cpu.Microseconds())/float64(total),
				service.DefaultBatchSize, c.raw.Seconds(), c.rps, c.rawCPU.Seconds()/c.raw.Seconds(), c.eps/c.rps)
			rs = append(rs, c)
		}
		m := medianBy(rs, func(c catchupRound) float64 { return c.eps / c.rps })
		b.fig("projector_catchup_eps", m.eps, "events/s")
		b.fig("raw_sqlite_file_rps", m.rps, "rows/s")
		st := b.goal("r_proj", m.eps/m.rps, "ratio", ">= 0.8", 0.8, false)
		var all []map[string]any
		for _, c := range rs {
			all = append(all, map[string]any{"projector_s": c.took.Seconds(), "raw_file_s": c.raw.Seconds(),
				"projector_cpu_s": c.cpu.Seconds(), "raw_file_cpu_s": c.rawCPU.Seconds()})
		}
		b.runs["catchup"] = map[string]any{"events": total, "rounds": all}
		b.rows = append(b.rows, row{fmt.Sprintf("projector catch-up, %d events into an empty read model (median of %d rounds)", total, len(rs)),
			fmt.Sprintf("%.0f events/s (%.1fs)", m.eps, m.took.Seconds()),
			fmt.Sprintf("raw insert, WAL file, %.0f rows/s (%.1fs)", m.rps, m.raw.Seconds()),
			fmt.Sprintf("R_proj %.2f", m.eps/m.rps), "R_proj ≥ 0.8", st})
	}
	if err := profiledRound("rebuild-"+label, func() error {
		took, _, err := rebuild(ctx, url, filepath.Join(dir, "rebuilt-profiled.sqlite"))
		b.logf("  profiled rebuild (not counted): %.2fs", took.Seconds())
		return err
	}); err != nil {
		return err
	}
	var rb []rebuildRound
	for i := range rounds {
		var r rebuildRound
		var err error
		r.total, r.replay, err = rebuild(ctx, url, filepath.Join(dir, fmt.Sprintf("rebuilt-%d.sqlite", i+1)))
		if err != nil {
			return err
		}
		r.mem, err = rawMemory(ctx, filepath.Join(dir, "schema.sqlite"), rows, 1000)
		if err != nil {
			return err
		}
		b.logf("  round %d/%d: rebuild (service.Rebuild) %.2fs (replay %.2fs, swap %.2fs); raw in-memory insert, 1000 rows/tx, %.2fs = %.0f rows/s; ratio %.2f",
			i+1, rounds, r.total.Seconds(), r.replay.Seconds(), (r.total - r.replay).Seconds(), r.mem.Seconds(), float64(len(rows))/r.mem.Seconds(),
			r.total.Seconds()/r.mem.Seconds())
		rb = append(rb, r)
	}
	m := medianBy(rb, func(r rebuildRound) float64 { return r.total.Seconds() / r.mem.Seconds() })
	ratio := m.total.Seconds() / m.mem.Seconds()
	p := "rebuild_" + label
	b.fig(p+"_s", m.total.Seconds(), "s")
	b.fig(p+"_replay_s", m.replay.Seconds(), "s")
	b.fig("raw_memory_"+label+"_s", m.mem.Seconds(), "s")
	var all []map[string]any
	for _, r := range rb {
		all = append(all, map[string]any{"rebuild_s": r.total.Seconds(), "replay_s": r.replay.Seconds(), "raw_memory_s": r.mem.Seconds()})
	}
	b.runs[p] = map[string]any{"events": total, "rounds": all}
	st, target := "", "(target applies to 1M)"
	if n >= 1000000 {
		target = "≤ 2× raw"
		st = b.goal(p+"_ratio", ratio, "ratio", "<= 2", 2, true)
		b.goal(p+"_moonshot_s", m.total.Seconds(), "s", "<= 15", 15, true)
	} else {
		b.fig(p+"_ratio", ratio, "ratio")
	}
	b.rows = append(b.rows, row{fmt.Sprintf("rebuild of %d events (service.Rebuild, Bulk + swap; median of %d rounds)", total, len(rb)),
		fmt.Sprintf("%.1fs (%.0f events/s)", m.total.Seconds(), float64(total)/m.total.Seconds()),
		fmt.Sprintf("raw insert in memory %.1fs (%.0f rows/s)", m.mem.Seconds(), float64(len(rows))/m.mem.Seconds()),
		fmt.Sprintf("%.2f×", ratio), target, st})
	return nil
}

// catchupRound is one projector catch-up and the raw file insert after it.
type catchupRound struct {
	took, raw, cpu, rawCPU time.Duration
	eps, rps               float64
}

// rebuildRound is one rebuild and the raw in-memory insert after it.
type rebuildRound struct{ total, replay, mem time.Duration }

// medianBy is the element whose key is the median (the lower one of an even
// count).
func medianBy[T any](xs []T, key func(T) float64) T {
	sorted := slices.Clone(xs)
	slices.SortFunc(sorted, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return sorted[(len(sorted)-1)/2]
}

func (b *bench) print() {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tours\traw baseline (same run)\tratio\ttarget\tstatus")
	fmt.Fprintln(tw, "-------\t----\t-----------------------\t-----\t------\t------")
	for _, r := range b.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Measure, r.Ours, r.Baseline, r.Ratio, r.Target, r.Status)
	}
	tw.Flush()
	for _, n := range b.notes {
		fmt.Println("note:", n)
	}
	fmt.Println()
	for _, f := range b.figures {
		line := fmt.Sprintf("BENCH %s %s %s", f.Name, strconv.FormatFloat(f.Value, 'f', 3, 64), f.Unit)
		if f.Target != "" {
			line += fmt.Sprintf("  # target %s: %s", f.Target, f.Status)
		}
		fmt.Println(line)
	}
}

func (b *bench) writeJSON(path string) error {
	host, _ := os.Hostname()
	out := map[string]any{
		"started": b.started.UTC().Format(time.RFC3339), "seconds": time.Since(b.started).Seconds(),
		"host": map[string]any{"name": host, "cpus": runtime.NumCPU(), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
			"loadavg_start": b.load0, "loadavg_end": loadavg()},
		"config": b.cfg, "figures": b.figures, "table": b.rows, "runs": b.runs, "notes": b.notes,
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// loadavg is /proc/loadavg (empty elsewhere): other work on a shared machine
// skews every figure, so the run records it.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// joinMs lists figures as "a / b / c".
func joinMs(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " / ")
}
