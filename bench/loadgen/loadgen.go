// Package loadgen drives a request function at a fixed concurrency (closed
// loop) or at a fixed rate (open loop) and summarises the latencies.
//
// In the open-loop mode every request has a scheduled send time, and its
// latency is measured from that time, not from when it was actually sent: a
// stalled server delays the requests queued behind the stall, and those
// delays count. A closed loop only ever sees the one slow request (the
// coordinated omission that flatters p99), so its percentiles describe the
// service time at saturation, while the open loop's describe what a caller
// arriving at that rate experiences.
package loadgen

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Op performs one request. i is the worker index in a closed loop and the
// request number in an open loop, so an Op can spread requests over owners.
type Op func(ctx context.Context, i int) error

// ClosedConfig sets up a closed loop.
type ClosedConfig struct {
	// Concurrency is the number of workers, each with one request in flight.
	Concurrency int
	// Warmup runs requests that are not recorded.
	Warmup time.Duration
	// Duration is the measured window; requests started in it are recorded.
	Duration time.Duration
}

// OpenConfig sets up an open loop.
type OpenConfig struct {
	// Rate is the requests per second to schedule.
	Rate float64
	// Warmup schedules requests that are not recorded.
	Warmup time.Duration
	// Duration is the measured window; requests scheduled in it are recorded.
	Duration time.Duration
	// Workers is the number of senders (default 64), so at most that many
	// requests are in flight. A request that waits for a free worker still
	// has its latency measured from its scheduled time.
	Workers int
}

// Result is one run's outcome.
type Result struct {
	Mode        string  `json:"mode"` // "closed" or "open"
	Concurrency int     `json:"concurrency,omitempty"`
	TargetRate  float64 `json:"target_rate,omitempty"`
	Requests    int     `json:"requests"` // recorded requests, including failed ones
	Errors      int     `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`    // length of the measured window
	Throughput  float64 `json:"throughput"` // successful requests per second in the window
	P50Ms       float64 `json:"p50_ms"`
	P90Ms       float64 `json:"p90_ms"`
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms"`
	MaxMs       float64 `json:"max_ms"`
	MeanMs      float64 `json:"mean_ms"`
	// MaxLateMs is the longest an open-loop request waited past its
	// scheduled time before it was sent: every worker was busy (the service
	// fell behind the rate) or the generator itself was starved of CPU.
	MaxLateMs float64 `json:"max_late_ms,omitempty"`

	lat []time.Duration // sorted, successful and failed requests
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of the recorded
// latencies, by the nearest-rank method; 0 when nothing was recorded.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(r.lat))))
	rank = min(max(rank, 1), len(r.lat))
	return r.lat[rank-1]
}

// Latencies returns the recorded latencies in ascending order.
func (r Result) Latencies() []time.Duration { return r.lat }

// String is a one-line summary.
func (r Result) String() string {
	s := fmt.Sprintf("%s: %d req in %.1fs = %.1f/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms",
		r.Mode, r.Requests, r.Seconds, r.Throughput, r.P50Ms, r.P99Ms, r.MaxMs)
	if r.Errors > 0 {
		s += fmt.Sprintf(", %d errors (first: %s)", r.Errors, r.FirstError)
	}
	return s
}

type errs struct {
	n     atomic.Int64
	mu    sync.Mutex
	first string
}

func (e *errs) add(err error) {
	if e.n.Add(1) == 1 {
		e.mu.Lock()
		e.first = err.Error()
		e.mu.Unlock()
	}
}

func summarise(r Result, lat []time.Duration, e *errs, window time.Duration) Result {
	slices.Sort(lat)
	r.lat = lat
	r.Requests = len(lat)
	r.Errors = int(e.n.Load())
	e.mu.Lock()
	r.FirstError = e.first
	e.mu.Unlock()
	r.Seconds = window.Seconds()
	if r.Seconds > 0 {
		r.Throughput = float64(r.Requests-r.Errors) / r.Seconds
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms = ms(r.Percentile(50)), ms(r.Percentile(90)), ms(r.Percentile(99)), ms(r.Percentile(99.9))
	if len(lat) > 0 {
		r.MaxMs = ms(lat[len(lat)-1])
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		r.MeanMs = ms(sum / time.Duration(len(lat)))
	}
	return r
}

// Closed runs cfg.Concurrency workers, each sending its next request as soon
// as the previous one is answered, and records the requests started in the
// measured window. Errors only count once the warm-up is over.
func Closed(ctx context.Context, cfg ClosedConfig, op Op) Result {
	n := max(cfg.Concurrency, 1)
	start := time.Now()
	measure := start.Add(cfg.Warmup)
	end := measure.Add(cfg.Duration)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  []time.Duration
		e    errs
		last atomic.Int64 // unix nanos of the last recorded completion
	)
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				err := op(ctx, w)
				t1 := time.Now()
				if t0.Before(measure) {
					continue
				}
				mine = append(mine, t1.Sub(t0))
				if err != nil {
					e.add(err)
				}
				for {
					l := last.Load()
					if t1.UnixNano() <= l || last.CompareAndSwap(l, t1.UnixNano()) {
						break
					}
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	window := cfg.Duration
	if l := time.Unix(0, last.Load()); l.After(end) {
		window = l.Sub(measure) // requests started in the window and finished after it
	}
	return summarise(Result{Mode: "closed", Concurrency: n}, all, &e, window)
}

// Open schedules requests at cfg.Rate per second, whatever the answers do,
// and measures each latency from the request's scheduled send time. A fixed
// pool of cfg.Workers goroutines sends them (one connection each at most): a
// request that finds every worker busy waits in the queue, and that wait is
// part of its latency.
func Open(ctx context.Context, cfg OpenConfig, op Op) Result {
	if cfg.Rate <= 0 {
		return Result{Mode: "open", FirstError: "rate must be positive"}
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = 64
	}
	total := int((cfg.Warmup + cfg.Duration).Seconds() * cfg.Rate)
	skip := int(cfg.Warmup.Seconds() * cfg.Rate)
	lat := make([]time.Duration, total)
	late := make([]time.Duration, total)
	type job struct {
		k  int
		at time.Time
	}
	jobs := make(chan job, total) // never blocks the schedule
	var (
		wg sync.WaitGroup
		e  errs
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if ctx.Err() != nil {
					continue
				}
				late[j.k] = time.Since(j.at)
				err := op(ctx, j.k)
				lat[j.k] = time.Since(j.at)
				if err != nil && j.k >= skip {
					e.add(err)
				}
			}
		}()
	}
	start := time.Now()
	sched := func(k int) time.Time { return start.Add(time.Duration(float64(k) / cfg.Rate * float64(time.Second))) }
	for k := 0; k < total && ctx.Err() == nil; {
		now := time.Now()
		for ; k < total && !sched(k).After(now); k++ {
			jobs <- job{k, sched(k)}
		}
		if k < total {
			time.Sleep(time.Until(sched(k)))
		}
	}
	close(jobs)
	wg.Wait()
	rec := make([]time.Duration, 0, total-skip)
	var maxLate time.Duration
	for k := skip; k < total; k++ {
		if lat[k] > 0 {
			rec = append(rec, lat[k])
			maxLate = max(maxLate, late[k])
		}
	}
	r := summarise(Result{Mode: "open", TargetRate: cfg.Rate, Concurrency: workers}, rec, &e, cfg.Duration)
	r.MaxLateMs = float64(maxLate) / float64(time.Millisecond)
	return r
}
