package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpvault/vault/bench/loadgen"
)

// getOp reads one random credential of a random prefilled owner.
func getOp(base string, fx []fixture) loadgen.Op {
	return func(ctx context.Context, _ int) error {
		f := &fx[rand.IntN(len(fx))]
		c := f.Creds[rand.IntN(len(f.Creds))]
		return call(ctx, base, http.MethodGet, "/servers/"+f.ServerID+"/credentials/"+c, f.Owner.User, nil, http.StatusOK, nil)
	}
}

// getMinSeqOp is getOp with X-Vault-Min-Sequence: seq (the prefill's last
// sequence): the read waits for nothing and asks the stream nothing.
func getMinSeqOp(base string, fx []fixture, seq uint64) loadgen.Op {
	h := map[string]string{"X-Vault-Min-Sequence": fmt.Sprint(seq)}
	return func(ctx context.Context, _ int) error {
		f := &fx[rand.IntN(len(fx))]
		c := f.Creds[rand.IntN(len(f.Creds))]
		return callWith(ctx, base, http.MethodGet, "/servers/"+f.ServerID+"/credentials/"+c, f.Owner.User, nil, h, http.StatusOK, nil)
	}
}

// listOp reads the first page (default limit 20, newest first) of a random
// prefilled owner's credentials.
func listOp(base string, fx []fixture) loadgen.Op {
	return func(ctx context.Context, _ int) error {
		f := &fx[rand.IntN(len(fx))]
		return call(ctx, base, http.MethodGet, "/servers/"+f.ServerID+"/credentials", f.Owner.User, nil, http.StatusOK, nil)
	}
}

// readRuns are the measurements of one read.
type readRuns struct {
	closed      loadgen.Result // its maximum rate, no writes
	cpuPerReq   time.Duration  // the vault's CPU per request in the closed loop
	open70      loadgen.Result // 70 % of max while creates run at 10 % of their max
	open70quiet loadgen.Result // 70 % of max, no writes
	open10      loadgen.Result // 10 % of max, no writes
	background  loadgen.Result // the creates that ran during open70
	// What the reads of each open run waited for (describeWaits).
	waits70, waits70quiet, waits10 string
}

// readSeries measures op at a fixed concurrency (its maximum rate), then
// offers 70 % of that rate open-loop twice — while a background open loop
// creates credentials at createRate, and without writes — and 10 % (light
// load) without writes.
func readSeries(ctx context.Context, op loadgen.Op, conc int, warm, dur time.Duration, background func(warm, dur time.Duration) loadgen.Result, cpu func() time.Duration, waits func() waitSnapshot) readRuns {
	var r readRuns
	// The CPU of the whole closed loop (warm-up included) over its requests.
	var n atomic.Int64
	counted := func(ctx context.Context, i int) error { n.Add(1); return op(ctx, i) }
	cpu0 := cpu()
	r.closed = loadgen.Closed(ctx, loadgen.ClosedConfig{Concurrency: conc, Warmup: warm, Duration: dur}, counted)
	if c := n.Load(); c > 0 {
		r.cpuPerReq = (cpu() - cpu0) / time.Duration(c)
	}
	if r.closed.Throughput <= 0 {
		return r
	}
	open := func(share float64, waited *string) loadgen.Result {
		before := waits()
		defer func() { *waited = describeWaits(before, waits()) }()
		return loadgen.Open(ctx, loadgen.OpenConfig{Rate: share * r.closed.Throughput, Warmup: warm, Duration: dur, Workers: 128}, op)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Starts with the reads and outlasts their window by a little.
		r.background = background(warm, dur+200*time.Millisecond)
	}()
	r.open70 = open(0.7, &r.waits70)
	wg.Wait()
	r.open70quiet = open(0.7, &r.waits70quiet)
	r.open10 = open(0.1, &r.waits10)
	return r
}
