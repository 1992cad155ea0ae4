package main

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/mcpvault/vault/bench/loadgen"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/natsserver"
)

// rawStore is a JetStream server in the bench process, started exactly as
// `vault run` starts its embedded one, with the vault's streams created by
// eventstore.Open (so the stream settings are the real ones).
type rawStore struct {
	srv *server.Server
	nc  *nats.Conn
	st  *eventstore.Store
}

func startRaw(ctx context.Context, dir string, syncAlways bool) (*rawStore, error) {
	opts := natsserver.Options{Listen: "127.0.0.1:0", StoreDir: dir, SyncAlways: syncAlways}
	if !syncAlways {
		opts.SyncInterval = 2 * time.Minute // what VAULT_NATS_SYNC=2m sets
	}
	srv, err := natsserver.Start(opts)
	if err != nil {
		return nil, err
	}
	nc, err := eventstore.Connect(srv.ClientURL(), "vaultbench-raw")
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	st, err := eventstore.Open(ctx, nc, eventstore.Config{Stream: "VAULT"})
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, err
	}
	return &rawStore{srv: srv, nc: nc, st: st}, nil
}

func (r *rawStore) Close() {
	r.nc.Close()
	r.srv.Shutdown()
	r.srv.WaitForShutdown()
}

// rawPublish is the baseline of a create: conc goroutines on one connection
// (as the API has one) each publishing, synchronously, a message of size
// bytes with a unique Nats-Msg-Id to its own server's credential subject.
func rawPublish(ctx context.Context, r *rawStore, conc, size int, warm, dur time.Duration) loadgen.Result {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'x'
	}
	servers := make([]string, conc)
	for i := range servers {
		servers[i] = newServerID()
	}
	var n atomic.Uint64
	return loadgen.Closed(ctx, loadgen.ClosedConfig{Concurrency: conc, Warmup: warm, Duration: dur},
		func(ctx context.Context, w int) error {
			id := newCredentialID()
			_, err := r.st.JS.Publish(ctx, "vault."+servers[w]+".credential."+id, payload,
				jetstream.WithMsgID(fmt.Sprintf("raw%023d", n.Add(1))))
			return err
		})
}

// rawAtomicBatch publishes batches of batch messages with JetStream's atomic
// batch publish (orbit.go jetstreamext.PublishMsgBatch, with the flow
// control eventstore's group commit uses: no ack before the commit): conc
// goroutines, each one batch at a time. The result counts batches; multiply
// Throughput by batch for messages.
func rawAtomicBatch(ctx context.Context, r *rawStore, conc, batch, size int, warm, dur time.Duration) (loadgen.Result, error) {
	s, err := r.st.JS.Stream(ctx, "VAULT")
	if err != nil {
		return loadgen.Result{}, err
	}
	cfg := s.CachedInfo().Config
	cfg.AllowAtomicPublish = true
	if _, err := r.st.JS.UpdateStream(ctx, cfg); err != nil {
		return loadgen.Result{}, fmt.Errorf("enable atomic publish: %w", err)
	}
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'x'
	}
	var n atomic.Uint64
	res := loadgen.Closed(ctx, loadgen.ClosedConfig{Concurrency: conc, Warmup: warm, Duration: dur},
		func(ctx context.Context, w int) error {
			bid := fmt.Sprintf("b%d.%d.%d", batch, w, n.Add(1)) // unique within the dedup window across runs
			srv := newServerID()
			msgs := make([]*nats.Msg, batch)
			for i := range msgs {
				m := nats.NewMsg("vault." + srv + ".credential." + newCredentialID())
				m.Data = payload
				m.Header.Set(jetstream.MsgIDHeader, bid+"-"+strconv.Itoa(i))
				msgs[i] = m
			}
			ack, err := jetstreamext.PublishMsgBatch(ctx, r.st.JS, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
			if err != nil {
				return err
			}
			if ack.BatchSize != uint64(batch) {
				return fmt.Errorf("batch commit acknowledged %d of %d messages", ack.BatchSize, batch)
			}
			return nil
		})
	return res, nil
}
