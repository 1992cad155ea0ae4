package metrics

import (
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
	want := `
# HELP vault_read_barrier_wait_seconds What a read waited for before querying the read model, by phase: stream (asking the stream for its last sequence; reads without X-Vault-Min-Sequence) and read_model (the read model applying the sequence the read must see; only reads that found it behind).
# TYPE vault_read_barrier_wait_seconds histogram
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.0001"} 0
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.00025"} 0
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.0005"} 0
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.001"} 0
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.0025"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.005"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.01"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.025"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.05"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.1"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.25"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="0.5"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="1"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="2.5"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="5"} 1
vault_read_barrier_wait_seconds_bucket{phase="read_model",le="+Inf"} 1
vault_read_barrier_wait_seconds_sum{phase="read_model"} 0.002
vault_read_barrier_wait_seconds_count{phase="read_model"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.0001"} 0
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.00025"} 0
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.0005"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.001"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.0025"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.005"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.01"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.025"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.05"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.1"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.25"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="0.5"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="1"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="2.5"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="5"} 1
vault_read_barrier_wait_seconds_bucket{phase="stream",le="+Inf"} 1
vault_read_barrier_wait_seconds_sum{phase="stream"} 0.0003
vault_read_barrier_wait_seconds_count{phase="stream"} 1
`
	if err := testutil.CollectAndCompare(m.readWait, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
