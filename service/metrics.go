package service

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/metrics"
)

// HTTPTimeouts bound how long a client may take over each part of an
// exchange, so that slow clients (slowloris) cannot hold connections.
type HTTPTimeouts struct {
	// ReadHeader bounds reading the request line and headers (default 5 s).
	ReadHeader time.Duration
	// Read bounds reading the whole request, body included (default 30 s).
	Read time.Duration
	// Write bounds the handler plus writing the answer (default 60 s; more
	// than the longest handler, testServer's 10 s upstream bound). A
	// streaming handler (the MCP endpoint's SSE) lifts it for its own
	// request with http.NewResponseController(w).SetWriteDeadline.
	Write time.Duration
	// Idle bounds a kept-alive connection between requests (default 120 s).
	Idle time.Duration
}

// DefaultMaxHeaderBytes bounds the request line and headers (net/http adds
// 4 KiB of slack); a bigger request is answered 431 by net/http.
const DefaultMaxHeaderBytes = 64 << 10

func (t HTTPTimeouts) orDefaults() HTTPTimeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.ReadHeader, 5*time.Second)
	def(&t.Read, 30*time.Second)
	def(&t.Write, 60*time.Second)
	def(&t.Idle, 120*time.Second)
	return t
}

// newHTTPServer is the http.Server of the API and of the metrics address.
func newHTTPServer(h http.Handler, t HTTPTimeouts, maxHeaderBytes int) *http.Server {
	t = t.orDefaults()
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read,
		WriteTimeout: t.Write, IdleTimeout: t.Idle, MaxHeaderBytes: maxHeaderBytes}
}

// streamCollector exports, at each scrape, the figures /readyz no longer
// shows publicly: the stream's last sequence, the read model's applied
// sequence, and the projector lag in events and in seconds (the age of the
// oldest unapplied event).
type streamCollector struct {
	v          *app.Vault
	m          *metrics.Metrics
	streamSeq  *prometheus.Desc
	appliedSeq *prometheus.Desc
}

func newStreamCollector(v *app.Vault, m *metrics.Metrics) *streamCollector {
	return &streamCollector{v: v, m: m,
		streamSeq:  prometheus.NewDesc("vault_stream_last_sequence", "Last sequence of the event stream (absent while it is unreachable).", nil, nil),
		appliedSeq: prometheus.NewDesc("vault_readmodel_applied_sequence", "Last stream sequence applied to this API's read model.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.streamSeq
	ch <- c.appliedSeq
}

// Collect implements prometheus.Collector.
func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	applied, last, ok := c.sequences(ctx)
	if applied != nil {
		ch <- prometheus.MustNewConstMetric(c.appliedSeq, prometheus.GaugeValue, float64(*applied))
	}
	if ok {
		ch <- prometheus.MustNewConstMetric(c.streamSeq, prometheus.GaugeValue, float64(last))
	}
}

// sequences reads the applied sequence (nil when unreadable) and the
// stream's last sequence (ok=false when unreachable).
func (c *streamCollector) sequences(ctx context.Context) (applied *uint64, last uint64, ok bool) {
	a, err := c.v.DB.AppliedSeq(ctx)
	if err != nil {
		return nil, 0, false
	}
	st := c.v.Store()
	if st == nil {
		return &a, 0, false
	}
	last, err = st.LastSeq(ctx)
	return &a, last, err == nil
}

// refreshLag sets the projector lag gauges; it runs before each scrape, so
// the gauges are current when they are gathered.
func (c *streamCollector) refreshLag() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	applied, last, ok := c.sequences(ctx)
	if applied == nil || !ok {
		return
	}
	if last <= *applied {
		c.m.SetProjectorLag(0, 0)
		return
	}
	// The age of the oldest event this API's read model has not applied:
	// one direct get, only while it is behind.
	at, err := c.v.Store().StoredAt(ctx, *applied+1)
	if err != nil {
		c.m.SetProjectorLagEvents(last - *applied)
		return
	}
	c.m.SetProjectorLag(last-*applied, time.Since(at))
}

// serveMetrics serves /metrics and the detailed /readyz on ln until ctx ends.
func serveMetrics(ln net.Listener, h http.Handler, t HTTPTimeouts) func() {
	srv := newHTTPServer(h, t, 0)
	go srv.Serve(ln)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}
}
