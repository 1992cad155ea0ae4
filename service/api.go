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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/httpapi"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
)

// API is the API process.
type API struct {
	HTTPAddr      string
	Listener      net.Listener // optional; overrides HTTPAddr (tests use :0)
	NATSURL       string
	Stream        string
	Replicas      int // stream replicas when the vault creates them (default 1)
	ReadModelPath string
	Keys          []httpapi.APIKey
	MasterKeys    *seal.Keyring
	AllowPrivate  bool
	RateLimit     float64
	// GroupCommit commits concurrent writes together as JetStream atomic
	// batches (worth it when every write is fsynced; see eventstore).
	GroupCommit bool
	Log         *slog.Logger
	Tester      app.Tester // optional; default: the upstream MCP client
	Now         func() time.Time
}

// Run serves until ctx ends, then shuts down gracefully.
func (a *API) Run(ctx context.Context) error {
	db, err := projections.Open(ctx, a.ReadModelPath, projections.Reader)
	if err != nil {
		return err
	}
	defer db.Close()
	nc, err := eventstore.Connect(a.NATSURL, "vault-api")
	if err != nil {
		return err
	}
	defer nc.Close()

	tester := a.Tester
	if tester == nil {
		tester = newUpstreamTester(a.AllowPrivate)
	}
	v := &app.Vault{DB: db, Keys: a.MasterKeys, Log: a.Log, Now: a.Now, Tester: tester}
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
	bindCtx, stopBind := context.WithCancel(ctx)
	defer stopBind()
	go func() {
		st, err := eventstore.OpenWhenReady(bindCtx, nc, eventstore.Config{Stream: a.Stream, Replicas: a.Replicas, GroupCommit: a.GroupCommit}, func(err error) {
			a.Log.Warn("event stream not available yet; writes answer 503", "err", err)
		})
		if err == nil {
			v.SetStore(st)
			a.Log.Info("event stream bound", "stream", a.Stream)
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newProjectorCollector(db))
	registerBarrierMetrics(reg, v)
	h := &httpapi.Handler{Vault: v, Log: a.Log, Keys: a.Keys, RateLimit: a.RateLimit, Registry: reg,
		Ready: func(ctx context.Context) (bool, any) { return ready(ctx, v, nc.IsConnected()) }}
	srv := &http.Server{Handler: h.Routes(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
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
	OK         bool   `json:"ok"`
	Reason     string `json:"reason,omitempty"`
	StreamSeq  uint64 `json:"stream_seq,omitempty"`
	AppliedSeq uint64 `json:"applied_seq,omitempty"`
}

func ready(ctx context.Context, v *app.Vault, connected bool) (bool, any) {
	r := readiness{Status: "ready", Stream: componentStatus{OK: true}, ReadModel: componentStatus{OK: true}}
	applied, err := v.DB.LastSeq(ctx)
	if err != nil {
		r.ReadModel = componentStatus{Reason: "read model unreadable"}
	}
	r.ReadModel.AppliedSeq = applied
	st := v.Store()
	var target uint64
	switch {
	case !connected:
		r.Stream = componentStatus{Reason: "not connected to NATS"}
	case st == nil:
		r.Stream = componentStatus{Reason: "event stream not bound yet"}
	default:
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		target, err = st.LastSeq(sctx)
		cancel()
		if err != nil {
			r.Stream = componentStatus{Reason: "event stream unreachable"}
		}
		r.Stream.StreamSeq = target
	}
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
