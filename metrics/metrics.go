// Package metrics defines the vault's Prometheus series in one place, with
// bounded labels only: a method from a fixed set, a route template, a status
// class. The code paths that feed a series call one method of *Metrics; every
// method is a no-op on a nil *Metrics, so callers never check.
//
// Nothing secret and nothing outsider-controlled becomes a label: no raw
// method, path, id, owner or header.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is the set of the vault's own series, registered on one registry.
type Metrics struct {
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	publish      *prometheus.HistogramVec
	lagEvents    prometheus.Gauge
	lagSeconds   prometheus.Gauge
	idemHits     prometheus.Counter
	limitRefusal *prometheus.CounterVec
	readWait     *prometheus.HistogramVec
	// readWaitBy holds readWait's observers by phase (no label lookup per read).
	readWaitBy map[string]prometheus.Observer
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// waitBuckets resolve the sub-millisecond waits of a read.
var waitBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// New creates the series and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vault_http_requests_total",
			Help: "HTTP requests by method (fixed set, OTHER for the rest), route template and status class.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vault_http_request_duration_seconds", Help: "HTTP request latency by method and route template.",
			Buckets: latencyBuckets,
		}, []string{"method", "route"}),
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vault_publish_duration_seconds", Help: "Time to get one append acknowledged by JetStream, by outcome (ok, conflict, error).",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		lagEvents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vault_projector_lag_events", Help: "Events in the stream the read model has not applied yet.",
		}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vault_projector_lag_seconds", Help: "Age of the oldest event the read model has not applied yet (0 when caught up).",
		}),
		idemHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vault_idempotency_replays_total", Help: "Requests answered from the idempotency record (Idempotent-Replayed).",
		}),
		limitRefusal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vault_limit_refusals_total", Help: "Creates refused by an operator limit, by limit (servers_per_owner, credentials_per_server).",
		}, []string{"limit"}),
		readWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vault_read_barrier_wait_seconds",
			Help:    "What a read waited for before querying the read model, by phase: stream (asking the stream for its last sequence; reads without X-Vault-Min-Sequence) and read_model (the read model applying the sequence the read must see; only reads that found it behind).",
			Buckets: waitBuckets,
		}, []string{"phase"}),
	}
	// Series that are fed by other code paths exist (at zero) from the start,
	// so dashboards and alerts do not depend on a first event.
	for _, o := range []string{PublishOK, PublishConflict, PublishError} {
		m.publish.WithLabelValues(o)
	}
	for _, l := range []string{LimitServersPerOwner, LimitCredentialsPerServer} {
		m.limitRefusal.WithLabelValues(l)
	}
	m.readWaitBy = map[string]prometheus.Observer{}
	for _, p := range []string{WaitStream, WaitReadModel} {
		m.readWaitBy[p] = m.readWait.WithLabelValues(p)
	}
	reg.MustRegister(m.requests, m.latency, m.publish, m.lagEvents, m.lagSeconds, m.idemHits, m.limitRefusal, m.readWait)
	return m
}

// knownMethods are the methods that get their own label value.
var knownMethods = map[string]string{
	http.MethodGet: http.MethodGet, http.MethodHead: http.MethodHead, http.MethodPost: http.MethodPost,
	http.MethodPut: http.MethodPut, http.MethodPatch: http.MethodPatch, http.MethodDelete: http.MethodDelete,
	http.MethodOptions: http.MethodOptions,
}

// Method maps an HTTP method to its label: itself when it is one of the
// standard methods, "OTHER" otherwise (a client may send any token).
func Method(m string) string {
	if v, ok := knownMethods[m]; ok {
		return v
	}
	return "OTHER"
}

// StatusClass maps a status code to its label: "2xx" … "5xx", "other".
func StatusClass(status int) string {
	switch {
	case status >= 100 && status < 600:
		return string(rune('0'+status/100)) + "xx"
	default:
		return "other"
	}
}

// ObserveRequest records one HTTP request. route must be a route template
// (or a fixed word such as "unmatched"), never a raw path.
func (m *Metrics) ObserveRequest(method, route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	method = Method(method)
	m.requests.WithLabelValues(method, route, StatusClass(status)).Inc()
	m.latency.WithLabelValues(method, route).Observe(d.Seconds())
}

// Publish outcomes for ObservePublish.
const (
	PublishOK       = "ok"
	PublishConflict = "conflict"
	PublishError    = "error"
)

// ObservePublish records how long one append to the stream took until
// JetStream acknowledged (or refused) it. outcome is PublishOK,
// PublishConflict or PublishError.
func (m *Metrics) ObservePublish(outcome string, d time.Duration) {
	if m == nil {
		return
	}
	switch outcome {
	case PublishOK, PublishConflict:
	default:
		outcome = PublishError
	}
	m.publish.WithLabelValues(outcome).Observe(d.Seconds())
}

// SetProjectorLag sets how far the read model is behind the stream: in
// events, and the age of the oldest unapplied event (0 when caught up).
func (m *Metrics) SetProjectorLag(events uint64, age time.Duration) {
	if m == nil {
		return
	}
	m.lagEvents.Set(float64(events))
	if events == 0 || age < 0 {
		age = 0
	}
	m.lagSeconds.Set(age.Seconds())
}

// SetProjectorLagEvents sets only the lag in events (the API computes it at
// each scrape from the stream's and the read model's sequences).
func (m *Metrics) SetProjectorLagEvents(events uint64) {
	if m == nil {
		return
	}
	m.lagEvents.Set(float64(events))
	if events == 0 {
		m.lagSeconds.Set(0)
	}
}

// IdempotencyHit counts one request answered from its idempotency record.
func (m *Metrics) IdempotencyHit() {
	if m == nil {
		return
	}
	m.idemHits.Inc()
}

// Limit names for LimitRefused.
const (
	LimitServersPerOwner      = "servers_per_owner"
	LimitCredentialsPerServer = "credentials_per_server"
)

// LimitRefused counts one create refused by an operator limit.
func (m *Metrics) LimitRefused(limit string) {
	if m == nil {
		return
	}
	if limit != LimitServersPerOwner && limit != LimitCredentialsPerServer {
		limit = "other"
	}
	m.limitRefusal.WithLabelValues(limit).Inc()
}

// Phases of a read's wait for ObserveReadWait.
const (
	WaitStream    = "stream"
	WaitReadModel = "read_model"
)

// ObserveReadWait records how long a read waited in one phase (WaitStream
// or WaitReadModel) of the read barrier.
func (m *Metrics) ObserveReadWait(phase string, d time.Duration) {
	if m == nil {
		return
	}
	if o, ok := m.readWaitBy[phase]; ok {
		o.Observe(d.Seconds())
	}
}
