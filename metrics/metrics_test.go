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

	reg := prometheus.NewRegistry()
	m := New(reg)
	m.ObservePublish(PublishConflict, 3*time.Millisecond)
	m.ObservePublish("made-up", time.Millisecond)
	m.SetProjectorLag(7, 2*time.Second)
	m.IdempotencyHit()
	m.LimitRefused(LimitCredentialsPerServer)
	m.LimitRefused("made-up")
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
}
