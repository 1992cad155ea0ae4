package metrics

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLabelsAreBounded(t *testing.T) {
	for in, want := range map[string]string{"GET": "GET", "DELETE": "DELETE", "get": "OTHER", "PROPFIND": "OTHER", "": "OTHER",
		strings.Repeat("X", 1000): "OTHER"} {
		if got := Method(in); got != want {
			t.Errorf("Method(%.10q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int]string{200: "2xx", 201: "2xx", 404: "4xx", 499: "4xx", 503: "5xx", 0: "other", 600: "other", 99: "other"} {
		if got := StatusClass(in); got != want {
			t.Errorf("StatusClass(%d) = %q, want %q", in, got, want)
		}
	}
}

// TestFeedingFunctions: each function a code path calls shows in its series,
// and a nil *Metrics is a no-op.
func TestFeedingFunctions(t *testing.T) {
	var none *Metrics
	none.ObservePublish(PublishOK, time.Millisecond)
	none.SetProjectorLag(1, time.Second)
	none.IdempotencyHit()
	none.LimitRefused(LimitServersPerOwner)
	none.ObserveRequest("GET", "/x", 200, time.Millisecond)
	none.ObserveReadWait(WaitStream, time.Millisecond)

	reg := prometheus.NewRegistry()
	m := New(reg)
	m.ObservePublish(PublishConflict, 3*time.Millisecond)
	m.ObservePublish("made-up", time.Millisecond)
	m.SetProjectorLag(7, 2*time.Second)
	m.IdempotencyHit()
	m.LimitRefused(LimitCredentialsPerServer)
	m.LimitRefused("made-up")
	m.ObserveReadWait(WaitStream, 300*time.Microsecond)
	m.ObserveReadWait(WaitReadModel, 2*time.Millisecond)
	m.ObserveReadWait("made-up", time.Second)
	if got := testutil.ToFloat64(m.lagEvents); got != 7 {
		t.Fatalf("lag events %v", got)
	}
	if got := testutil.ToFloat64(m.lagSeconds); got != 2 {
		t.Fatalf("lag seconds %v", got)
	}
	m.SetProjectorLagEvents(0)
	if got := testutil.ToFloat64(m.lagSeconds); got != 0 {
		t.Fatalf("caught up but lag seconds %v", got)
	}
	if testutil.ToFloat64(m.idemHits) != 1 {
		t.Fatal("gauges not set")
	}
	if testutil.CollectAndCount(m.publish) != 3 || testutil.CollectAndCount(m.limitRefusal) != 3 {
		t.Fatalf("label sets: publish %d, limits %d (a made-up label value must map to a fixed one)",
			testutil.CollectAndCount(m.publish), testutil.CollectAndCount(m.limitRefusal))
	}
	if n := testutil.CollectAndCount(m.readWait); n != 2 {
		t.Fatalf("read wait phases %d, want 2 (an unknown phase is not recorded)", n)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// Each observation lands in its phase, in the first bucket that holds it.
	want := map[string]struct {
		sum float64
		le  float64
	}{WaitStream: {0.0003, 0.0005}, WaitReadModel: {0.002, 0.0025}}
	for _, f := range fams {
		if f.GetName() != "vault_read_barrier_wait_seconds" {
			continue
		}
		for _, mm := range f.GetMetric() {
			phase := mm.GetLabel()[0].GetValue()
			h, w := mm.GetHistogram(), want[phase]
			if h.GetSampleCount() != 1 || math.Abs(h.GetSampleSum()-w.sum) > 1e-9 {
				t.Errorf("phase %s: count %d sum %v, want 1 and %v", phase, h.GetSampleCount(), h.GetSampleSum(), w.sum)
			}
			for _, b := range h.GetBucket() {
				if in := b.GetCumulativeCount() == 1; in != (b.GetUpperBound() >= w.le) {
					t.Errorf("phase %s: bucket le=%v holds %d", phase, b.GetUpperBound(), b.GetCumulativeCount())
				}
			}
			delete(want, phase)
		}
	}
	if len(want) != 0 {
		t.Errorf("phases missing: %v", want)
	}
}
