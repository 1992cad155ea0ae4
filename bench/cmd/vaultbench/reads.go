package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
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

// readRuns are the measurements of one read. Each open-loop figure is the
// round with the median p99 of the rounds run (readSeries).
type readRuns struct {
	closed      loadgen.Result // its maximum rate, no writes
	cpuPerReq   time.Duration  // the vault's CPU per request in the closed loop
	open70      loadgen.Result // 70 % of max while creates run at 10 % of their max
	open70quiet loadgen.Result // 70 % of max, no writes
	open10      loadgen.Result // 10 % of max, no writes
	background  loadgen.Result // the creates that ran during open70
	// What the reads of each open run waited for (describeWaits).
	waits70, waits70quiet, waits10 string
	// The p99 of every round, in order, by open run ("open70",
	// "open70_nowrites", "open10").
	p99s map[string][]float64
}

// openRound is one open-loop run of a round, with what its reads waited for
// and, for the run with writes, the creates that ran meanwhile.
type openRound struct {
	res, background loadgen.Result
	waits           string
}

// medianRound is the round whose p99 is the median (the lower one of an
// even count).
func medianRound(rounds []openRound) openRound {
	return medianBy(rounds, func(r openRound) float64 { return r.res.P99Ms })
}

// readSeries measures op at a fixed concurrency (its maximum rate), then,
// in each of rounds rounds, offers 70 % of that rate open-loop twice — while
// a background open loop creates credentials at createRate, and without
// writes — and 10 % (light load) without writes. One run's p99 moves by
// ±40 % on a shared two-core machine; the median round of several is what
// the figures report.
func readSeries(ctx context.Context, op loadgen.Op, conc, rounds int, warm, dur time.Duration, background func(warm, dur time.Duration) loadgen.Result, cpu func() time.Duration, waits func() waitSnapshot) readRuns {
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
	open := func(share float64) openRound {
		before := waits()
		res := loadgen.Open(ctx, loadgen.OpenConfig{Rate: share * r.closed.Throughput, Warmup: warm, Duration: dur, Workers: 128}, op)
		return openRound{res: res, waits: describeWaits(before, waits())}
	}
	var with, quiet, light []openRound
	for range max(rounds, 1) {
		w, bg := duringWrites(warm, dur, background, func() openRound { return open(0.7) })
		w.background = bg
		with = append(with, w)
		quiet = append(quiet, open(0.7))
		light = append(light, open(0.1))
	}
	r.p99s = map[string][]float64{}
	for _, k := range []struct {
		name   string
		rounds []openRound
		res    *loadgen.Result
		waits  *string
	}{{"open70", with, &r.open70, &r.waits70}, {"open70_nowrites", quiet, &r.open70quiet, &r.waits70quiet}, {"open10", light, &r.open10, &r.waits10}} {
		for _, rd := range k.rounds {
			r.p99s[k.name] = append(r.p99s[k.name], rd.res.P99Ms)
		}
		m := medianRound(k.rounds)
		*k.res, *k.waits = m.res, m.waits
		if k.name == "open70" {
			r.background = m.background
		}
	}
	return r
}
