// Package service wires the vault's processes: the API (HTTP adapter,
// application layer, stream and read model) and the projector. cmd/* parse
// the configuration and call Run.
package service

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/httpapi"
	"github.com/mcpvault/vault/mcpproxy"
	"github.com/mcpvault/vault/metrics"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
	"github.com/mcpvault/vault/upstream"
)

// API is the API process.
type API struct {
	HTTPAddr string
	Listener net.Listener // optional; overrides HTTPAddr (tests use :0)
	NATSURL  string
	// NATSAuth is the API's NATS identity (role api unless set).
	NATSAuth      eventstore.Auth
	Stream        string
	Replicas      int // stream replicas when the vault creates them (default 1)
	ReadModelPath string
	Keys          []httpapi.APIKey
	MasterKeys    *seal.Keyring
	AuditKeys     *audit.Keyring // signs every event (VAULT_AUDIT_KEYS); nil: unsigned
	UnsignedUntil uint64         // VAULT_AUDIT_UNSIGNED_UNTIL
	AllowPrivate  bool
	RateLimit     float64
	// GroupCommit commits concurrent writes together as JetStream atomic
	// batches (worth it when every write is fsynced; see eventstore).
	GroupCommit bool
	// KeyPool bounds the data keys stored ahead per (owner, server) so that
	// a create is one durable publish (app/keypool.go): 0 = the default
	// (16), negative = off (VAULT_KEY_POOL=0).
	KeyPool int
	// KeyPoolMaxAge is how long a pooled key may wait for its create
	// (0 = the default, 2 s; tests shorten or lengthen it).
	KeyPoolMaxAge time.Duration
	// KeyPoolAtomic stores the pool's keys as atomic batches
	// (VAULT_KEY_POOL_BATCH=atomic) instead of async publishes.
	KeyPoolAtomic bool
	// KeyPoolHotGap is app.KeyPoolConfig.HotGap (0: the default).
	KeyPoolHotGap time.Duration
	Log           *slog.Logger
	Tester        app.Tester // optional; default: the upstream MCP client
	Now           func() time.Time
	// Expiry configures this replica's expiry scheduler (service/expiry.go;
	// Vault and Log are filled in by Run). No scheduler runs while
	// Expiry.Holder is empty.
	Expiry Expiry
	// MCP bounds the MCP endpoint's sessions (zero fields: mcpproxy defaults).
	MCP mcpproxy.Options
	// MetricsAddr (VAULT_METRICS_ADDR) serves /metrics and the detailed
	// /readyz on their own address; empty = /metrics and /readyz/detail on
	// the API address. MetricsListener overrides it (tests use :0).
	MetricsAddr     string
	MetricsListener net.Listener
	// Timeouts and MaxHeaderBytes bound slow and oversized requests; zero
	// values take the defaults of HTTPTimeouts and DefaultMaxHeaderBytes.
	Timeouts       HTTPTimeouts
	MaxHeaderBytes int
	// Limits are the operator caps (VAULT_MAX_SERVERS_PER_OWNER,
	// VAULT_MAX_CREDENTIALS_PER_SERVER); zero = off.
	Limits app.Limits
}

// DefaultKeyPool is the default bound of data keys stored ahead per (owner,
// server) pair (VAULT_KEY_POOL).
const DefaultKeyPool = 16

// Run serves until ctx ends, then shuts down gracefully.
func (a *API) Run(ctx context.Context) error {
	db, err := projections.Open(ctx, a.ReadModelPath, projections.Reader)
	if err != nil {
		return err
	}
	defer db.Close()
	auth := a.NATSAuth
	if auth.Role == "" {
		auth.Role = eventstore.RoleAPI
	}
	if auth.Log == nil {
		auth.Log = a.Log
	}
	nc, err := eventstore.Dial(a.NATSURL, "vault-api", auth)
	if err != nil {
		return err
	}
	defer nc.Close()

	tester := a.Tester
	if tester == nil {
		tester = newUpstreamTester(a.AllowPrivate)
	}
	v := &app.Vault{DB: db, Keys: a.MasterKeys, Log: a.Log, Now: a.Now, Tester: tester, Limits: a.Limits, Audit: a.AuditKeys, UnsignedUntil: a.UnsignedUntil}
	switch {
	case a.KeyPool == 0:
		v.KeyPool.Size = DefaultKeyPool
	case a.KeyPool > 0:
		v.KeyPool.Size = a.KeyPool
	}
	v.KeyPool.MaxAge, v.KeyPool.Atomic, v.KeyPool.HotGap = a.KeyPoolMaxAge, a.KeyPoolAtomic, a.KeyPoolHotGap
	// Reads wait on the projector's announcements for this read model file.
	stopWatch, err := eventstore.WatchApplied(nc, a.Stream, db.InstanceID(), v.Applied, v.ResyncApplied)
	if err != nil {
		return err
	}
	defer stopWatch()
	defer func() { // stops the group committers; runs before nc.Close
		if st := v.Store(); st != nil {
			st.Close()
		}
	}()
	// Runs after the HTTP server's shutdown (no create running), before the
	// store closes: the pool's unused keys are destroyed.
	defer v.CloseKeyPool()
	bindCtx, stopBind := context.WithCancel(ctx)
	defer stopBind()
	go func() {
		st, err := eventstore.OpenWhenReady(bindCtx, nc, eventstore.Config{Stream: a.Stream, Replicas: a.Replicas, GroupCommit: a.GroupCommit}, func(err error) {
			a.Log.Warn("event stream not available yet; writes answer 503", "err", err)
		})
		if err == nil {
			v.SetStore(st)
			a.Log.Info("event stream bound", "stream", a.Stream)
			v.FollowTrees(bindCtx, st) // reads of a server tree wait only for its events
		}
	}()

	if a.Expiry.Holder != "" {
		exp := a.Expiry
		exp.Vault, exp.Log = v, a.Log
		if exp.Now == nil {
			exp.Now = a.Now
		}
		go exp.Run(bindCtx)
	}
	// The MCP endpoint; at shutdown its sessions end first, then the queued
	// use records are appended (DrainUses) before the process exits.
	proxy := mcpproxy.New(v, &upstream.Dialer{AllowPrivate: a.AllowPrivate, UserAgent: "mcp-vault/1"}, a.Log, a.MCP)
	defer func() {
		proxy.Close()
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v.DrainUses(dctx)
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newProjectorCollector(db))
	registerBarrierMetrics(reg, v)
	registerProxyMetrics(reg, proxy)
	registerKeyPoolMetrics(reg, v)
	m := metrics.New(reg)
	v.Metrics = m
	if v.Limits.Refused == nil {
		v.Limits.Refused = m.LimitRefused
	}
	sc := newStreamCollector(v, m)
	reg.MustRegister(sc)
	metricsLn := a.MetricsListener
	if metricsLn == nil && a.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", a.MetricsAddr); err != nil {
			return err
		}
	}
	h := &httpapi.Handler{Vault: v, Log: a.Log, Keys: a.Keys, RateLimit: a.RateLimit, Registry: reg, Metrics: m, MCP: proxy,
		SeparateMetrics: metricsLn != nil, BeforeScrape: sc.refreshLag,
		Ready: newReadiness(v, nc.IsConnected).check}
	srv := newHTTPServer(h.Routes(), a.Timeouts, a.MaxHeaderBytes)
	srv.RegisterOnShutdown(proxy.Close) // open MCP streams would hold Shutdown otherwise
	if metricsLn != nil {
		a.Log.Info("metrics listening", "addr", metricsLn.Addr().String())
		defer serveMetrics(metricsLn, h.MetricsRoutes(), a.Timeouts)()
	}
	ln := a.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", a.HTTPAddr); err != nil {
			return err
		}
	}
	a.Log.Info("API listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// readiness is the /readyz body.
type readiness struct {
	Status    string          `json:"status"`
	Stream    componentStatus `json:"stream"`
	ReadModel componentStatus `json:"read_model"`
	// Projector is pending work that does not make the process unready
	// (held servers, key destructions being retried); Reasons says it.
	Projector projectorDetail `json:"projector"`
	Reasons   []string        `json:"reasons,omitempty"`
}

type componentStatus struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	// The figures are always present in the detail (the public /readyz
	// drops every number).
	StreamSeq  uint64 `json:"stream_seq"`
	AppliedSeq uint64 `json:"applied_seq"`
}

// readinessTTL is how long a stream check is reused: a load balancer polling
// /readyz costs at most one round of stream info requests per second.
const readinessTTL = time.Second

// readinessCheck answers /readyz. The stream part asks the stream leaders
// whether a write can be taken now (leader elected, quorum of current
// replicas), not only whether the TCP connection is up; its result is cached
// for readinessTTL.
type readinessCheck struct {
	v         *app.Vault
	connected func() bool

	mu     sync.Mutex
	at     time.Time
	stream componentStatus
}

func newReadiness(v *app.Vault, connected func() bool) *readinessCheck {
	return &readinessCheck{v: v, connected: connected}
}

// streamStatus returns the cached stream status, refreshing it when older
// than readinessTTL (one refresh at a time; concurrent callers wait for it).
func (rc *readinessCheck) streamStatus(ctx context.Context) componentStatus {
	// The local checks are free and never cached.
	st := rc.v.Store()
	switch {
	case !rc.connected():
		return componentStatus{Reason: "not connected to NATS"}
	case st == nil:
		return componentStatus{Reason: "event stream not bound yet"}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !rc.at.IsZero() && time.Since(rc.at) < readinessTTL {
		return rc.stream
	}
	s := componentStatus{OK: true}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	seq, err := st.WriteHealth(sctx)
	cancel()
	switch {
	case errors.Is(err, eventstore.ErrNoQuorum):
		s = componentStatus{Reason: "event stream cannot take writes (no leader or no quorum)"}
	case err != nil:
		s = componentStatus{Reason: "event stream unreachable"}
	}
	s.StreamSeq = seq
	rc.stream, rc.at = s, time.Now()
	return s
}

func (rc *readinessCheck) check(ctx context.Context) (bool, any) {
	v := rc.v
	r := readiness{Status: "ready", Stream: rc.streamStatus(ctx), ReadModel: componentStatus{OK: true}}
	applied, err := v.DB.AppliedSeq(ctx)
	if err != nil {
		r.ReadModel = componentStatus{Reason: "read model unreadable"}
	}
	r.ReadModel.AppliedSeq = applied
	target := r.Stream.StreamSeq
	if r.Stream.OK && r.ReadModel.OK && applied < target {
		// Give a projector that is merely a few events behind a moment.
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		if err := v.Sync(wctx); err != nil || wctx.Err() != nil {
			r.ReadModel = componentStatus{Reason: "read model is behind the stream", AppliedSeq: applied, StreamSeq: target}
		}
		cancel()
	}
	r.Projector, r.Reasons = projectorReasons(ctx, v.DB)
	if !r.Stream.OK || !r.ReadModel.OK {
		r.Status = "not_ready"
		return false, r
	}
	return true, r
}
