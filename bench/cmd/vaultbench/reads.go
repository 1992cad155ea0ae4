package main

import (
	"context"
	"math/rand/v2"
	"net/http"
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

// listOp reads the first page (default limit 20, newest first) of a random
// prefilled owner's credentials.
func listOp(base string, fx []fixture) loadgen.Op {
	return func(ctx context.Context, _ int) error {
		f := &fx[rand.IntN(len(fx))]
		return call(ctx, base, http.MethodGet, "/servers/"+f.ServerID+"/credentials", f.Owner.User, nil, http.StatusOK, nil)
	}
}

// readTriple measures op at a fixed concurrency (its maximum rate), then
// offers 70 % and 10 % (light load) of that rate open-loop.
func readTriple(ctx context.Context, op loadgen.Op, conc int, warm, dur time.Duration) (closed, open70, open10 loadgen.Result) {
	closed = loadgen.Closed(ctx, loadgen.ClosedConfig{Concurrency: conc, Warmup: warm, Duration: dur}, op)
	if closed.Throughput > 0 {
		open70 = loadgen.Open(ctx, loadgen.OpenConfig{Rate: 0.7 * closed.Throughput, Warmup: warm, Duration: dur, Workers: 128}, op)
		open10 = loadgen.Open(ctx, loadgen.OpenConfig{Rate: 0.1 * closed.Throughput, Warmup: warm, Duration: dur, Workers: 128}, op)
	}
	return closed, open70, open10
}
