package loadgen_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpvault/vault/bench/loadgen"
)

func TestClosedLoopCountsRequestsAndErrors(t *testing.T) {
	var calls atomic.Int64
	r := loadgen.Closed(context.Background(), loadgen.ClosedConfig{Concurrency: 4, Warmup: 20 * time.Millisecond, Duration: 150 * time.Millisecond},
		func(ctx context.Context, w int) error {
			if w < 0 || w >= 4 {
				t.Errorf("worker index %d out of range", w)
			}
			time.Sleep(2 * time.Millisecond)
			if calls.Add(1)%10 == 0 {
				return errors.New("every tenth fails")
			}
			return nil
		})
	if r.Requests == 0 || r.Requests >= int(calls.Load()) {
		t.Fatalf("recorded %d of %d calls; want some, and fewer than all (warm-up is not recorded)", r.Requests, calls.Load())
	}
	if r.Errors == 0 || r.FirstError != "every tenth fails" {
		t.Fatalf("errors %d, first %q", r.Errors, r.FirstError)
	}
	if r.P50Ms < 2 {
		t.Fatalf("p50 %.2f ms below the 2 ms each request sleeps", r.P50Ms)
	}
	if r.Throughput <= 0 || r.Throughput > 4*1000/2 {
		t.Fatalf("throughput %.1f/s impossible for 4 workers at ≥ 2 ms", r.Throughput)
	}
}

// One stall of 100 ms with one request in flight at 200 req/s holds up the
// ~20 requests scheduled during it. The open loop must charge them the wait
// (latency from their scheduled time), which a closed loop would omit.
func TestOpenLoopChargesQueueingBehindAStall(t *testing.T) {
	r := loadgen.Open(context.Background(), loadgen.OpenConfig{Rate: 200, Duration: 400 * time.Millisecond, Workers: 1},
		func(ctx context.Context, k int) error {
			if k == 10 {
				time.Sleep(100 * time.Millisecond)
			}
			return nil
		})
	if r.Requests != 80 {
		t.Fatalf("recorded %d requests, want the 80 scheduled", r.Requests)
	}
	if r.P90Ms < 20 {
		t.Fatalf("p90 %.2f ms: the requests queued behind the stall were not charged for it", r.P90Ms)
	}
	if r.MaxLateMs < 50 {
		t.Fatalf("max lateness %.2f ms, want the stall to show", r.MaxLateMs)
	}
}

func TestPercentileNearestRank(t *testing.T) {
	r := loadgen.Open(context.Background(), loadgen.OpenConfig{Rate: 1000, Duration: 100 * time.Millisecond},
		func(ctx context.Context, k int) error { return nil })
	lat := r.Latencies()
	if len(lat) != 100 {
		t.Fatalf("%d latencies, want 100", len(lat))
	}
	if r.Percentile(100) != lat[99] || r.Percentile(1) != lat[0] || r.Percentile(50) != lat[49] {
		t.Fatal("percentiles are not nearest-rank over the sorted latencies")
	}
}
