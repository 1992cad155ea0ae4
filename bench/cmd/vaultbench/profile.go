package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"time"

	"github.com/mcpvault/vault/bench/loadgen"
	"github.com/mcpvault/vault/httpapi"
	"github.com/mcpvault/vault/seal"
	"github.com/mcpvault/vault/service"
)

// inProcess is the vault run inside the bench process — the same
// service.API and service.Projector that bin/api and bin/projector run, and
// the embedded JetStream server of bin/vault — so that pprof can see it (the
// API binary has no profiling endpoint). The load generator shares the
// process, so its own cost appears in the profile too (net/http client).
type inProcess struct {
	raw    *rawStore
	URL    string
	cancel context.CancelFunc
	done   chan error
}

func startInProcess(ctx context.Context, dir string, syncAlways bool) (*inProcess, error) {
	raw, err := startRaw(ctx, filepath.Join(dir, "jetstream"), syncAlways)
	if err != nil {
		return nil, err
	}
	kr, err := seal.ParseKeyring(seal.NewKeySpec("bench1"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	p := &inProcess{raw: raw, URL: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 2)}
	rm := filepath.Join(dir, "readmodel.sqlite")
	url := raw.srv.ClientURL()
	go func() {
		p.done <- (&service.Projector{NATSURL: url, Stream: "VAULT", ReadModelPath: rm, Log: quiet}).Run(rctx)
	}()
	go func() {
		p.done <- (&service.API{Listener: ln, NATSURL: url, Stream: "VAULT", ReadModelPath: rm,
			Keys: []httpapi.APIKey{{Account: benchAccount, Key: benchKey}}, MasterKeys: kr, Log: quiet,
			AllowPrivate: true, KeyPool: profileKeyPool(), KeyPoolAtomic: os.Getenv("VAULT_KEY_POOL_BATCH") == "atomic",
			GroupCommit: os.Getenv("VAULT_GROUP_COMMIT") == "true",
		}).Run(rctx) // the proxy phase's upstream is on loopback
	}()
	v := &vaultProc{URL: p.URL, exited: make(chan error, 1)}
	if err := v.waitReady(ctx, 30*time.Second, 0); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// prefill publishes users × perUser credentials (fixtures "pr") through the
// stream and waits until the in-process vault has applied them.
func (p *inProcess) prefill(ctx context.Context, users, perUser int) ([]fixture, error) {
	fx, msgs := buildFixtures("pr", users, perUser)
	last, err := publishAll(ctx, p.raw.st, msgs)
	if err != nil {
		return nil, err
	}
	v := &vaultProc{URL: p.URL, exited: make(chan error, 1)}
	return fx, v.waitReady(ctx, 2*time.Minute, last)
}

func (p *inProcess) Stop() {
	p.cancel()
	<-p.done
	<-p.done
	p.raw.Close()
}

// profiled runs f under the CPU profiler, writing to path.
func profiled(path string, f func()) error {
	return recorded(path, pprof.StartCPUProfile, pprof.StopCPUProfile, f)
}

// traced runs f under the execution tracer, writing to path.
func traced(path string, f func()) error { return recorded(path, trace.Start, trace.Stop, f) }

// recorded runs f between start, writing to path, and stop.
func recorded(path string, start func(io.Writer) error, stop func(), f func()) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := start(out); err != nil {
		return err
	}
	f()
	stop()
	return nil
}

// writeAllocs writes the process's allocs profile (cumulative) to path.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC() // the profile shows allocations up to the last GC
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profileRun profiles the create path (default sync and sync always) and the
// get path of an in-process vault; the files go to prefix-*.cpu.prof.
func profileRun(ctx context.Context, tmp, prefix string, conc int, dur time.Duration, logf func(string, ...any)) (map[string]loadgen.Result, error) {
	out := map[string]loadgen.Result{}
	for _, always := range []bool{false, true} {
		name := map[bool]string{false: "default", true: "always"}[always]
		p, err := startInProcess(ctx, filepath.Join(tmp, "profile-"+name), always)
		if err != nil {
			return nil, err
		}
		res, err := profileVault(ctx, p, name, prefix, conc, dur, logf, !always)
		p.Stop()
		if err != nil {
			return nil, err
		}
		for k, r := range res {
			out[k] = r
		}
	}
	return out, nil
}

func profileVault(ctx context.Context, p *inProcess, name, prefix string, conc int, dur time.Duration, logf func(string, ...any), reads bool) (map[string]loadgen.Result, error) {
	out := map[string]loadgen.Result{}
	owners, err := setupOwners(ctx, p.URL, "prof", conc, 8)
	if err != nil {
		return nil, err
	}
	createClosed(ctx, p.URL, owners, false, 0, 2*time.Second) // warm-up
	var res loadgen.Result
	path := fmt.Sprintf("%s-create-%s.cpu.prof", prefix, name)
	if err := profiled(path, func() { res = createClosed(ctx, p.URL, owners, false, 0, dur) }); err != nil {
		return nil, err
	}
	out["profile_create_"+name] = res
	logf("profile create (%s, in process): %s → %s", name, res, path)
	if !reads {
		return out, nil
	}
	fx, err := p.prefill(ctx, 200, 100)
	if err != nil {
		return nil, err
	}
	path = prefix + "-get.cpu.prof"
	if err := profiled(path, func() {
		res = loadgen.Closed(ctx, loadgen.ClosedConfig{Concurrency: conc, Duration: dur}, getOp(p.URL, fx))
	}); err != nil {
		return nil, err
	}
	out["profile_get"] = res
	logf("profile get (in process): %s → %s", res, path)
	return out, nil
}

// profileReads profiles reads of an in-process vault while creates run in
// the background at a tenth of their closed-loop rate: CPU profiles of get
// and list at 70 % of their closed-loop rate, and an execution trace of
// each (prefix-read-*.cpu.prof, prefix-read-*.trace).
func profileReads(ctx context.Context, tmp, prefix string, conc int, dur time.Duration, logf func(string, ...any)) (map[string]loadgen.Result, error) {
	out := map[string]loadgen.Result{}
	p, err := startInProcess(ctx, filepath.Join(tmp, "profile-reads"), false)
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	fx, err := p.prefill(ctx, 1000, 20)
	if err != nil {
		return nil, err
	}
	writers, err := setupOwners(ctx, p.URL, "pw", conc, 8)
	if err != nil {
		return nil, err
	}
	cmax := createClosed(ctx, p.URL, writers, true, time.Second, dur/2)
	logf("profile reads: create max %s", cmax)
	for _, k := range []struct {
		name string
		op   loadgen.Op
	}{{"get", getOp(p.URL, fx)}, {"list", listOp(p.URL, fx)}} {
		closed := loadgen.Closed(ctx, loadgen.ClosedConfig{Concurrency: conc, Warmup: time.Second, Duration: dur / 2}, k.op)
		var res, bg loadgen.Result
		path := fmt.Sprintf("%s-read-%s.cpu.prof", prefix, k.name)
		// Heap allocations of the window: the allocs profile before and
		// after it (go tool pprof -sample_index=alloc_space -diff_base …).
		apath := fmt.Sprintf("%s-read-%s.allocs", prefix, k.name)
		if err := writeAllocs(apath + "-before.prof"); err != nil {
			return nil, err
		}
		creates := func(warm, dur time.Duration) loadgen.Result {
			return createOpen(ctx, p.URL, writers, 0.1*cmax.Throughput, warm, dur)
		}
		if err := profiled(path, func() {
			res, bg = duringWrites(0, dur, creates, func() loadgen.Result {
				return loadgen.Open(ctx, loadgen.OpenConfig{Rate: 0.7 * closed.Throughput, Duration: dur, Workers: 128}, k.op)
			})
		}); err != nil {
			return nil, err
		}
		if err := writeAllocs(apath + ".prof"); err != nil {
			return nil, err
		}
		out["profile_read_"+k.name] = res
		logf("profile %s at 70%% of %.0f/s with creates at %.0f/s: %s (creates %s) → %s", k.name, closed.Throughput, 0.1*cmax.Throughput, res, bg, path)
		tpath := prefix + "-read-" + k.name + ".trace"
		if err := traced(tpath, func() {
			done := make(chan struct{})
			go func() {
				createOpen(ctx, p.URL, writers, 0.1*cmax.Throughput, 0, 2*time.Second)
				close(done)
			}()
			loadgen.Open(ctx, loadgen.OpenConfig{Rate: 0.7 * closed.Throughput, Duration: 2 * time.Second, Workers: 128}, k.op)
			<-done
		}); err != nil {
			return nil, err
		}
		logf("  trace: %s", tpath)
	}
	return out, nil
}

// profileKeyPool is VAULT_KEY_POOL for the in-process vault, as bin/api
// reads it (unset: the default; 0: off), so that profiles can compare.
func profileKeyPool() int {
	switch v := os.Getenv("VAULT_KEY_POOL"); v {
	case "":
		return 0
	case "0":
		return -1
	default:
		var n int
		fmt.Sscan(v, &n)
		return n
	}
}
