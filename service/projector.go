package service

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
)

// Projector consumes the event stream in order and applies it to the SQLite
// read model, with the last applied sequence in the same transaction.
type Projector struct {
	NATSURL       string
	Stream        string
	Replicas      int // stream replicas when the vault creates them (default 1)
	ReadModelPath string
	Log           *slog.Logger
	// BatchSize is the most events applied in one transaction (default 1000).
	BatchSize int
	// NoShred skips destroying data keys of revoked/deleted credentials
	// (the API already did; a rebuild does not need to repeat it).
	NoShred bool
}

// Run projects until ctx ends. It reconnects and resumes by itself.
func (p *Projector) Run(ctx context.Context) error {
	db, err := projections.Open(ctx, p.ReadModelPath, projections.Writer)
	if err != nil {
		return err
	}
	defer db.Close()
	nc, err := eventstore.Connect(p.NATSURL, "vault-projector")
	if err != nil {
		return err
	}
	defer nc.Close()
	st, err := eventstore.OpenWhenReady(ctx, nc, eventstore.Config{Stream: p.Stream, Replicas: p.Replicas}, func(err error) {
		p.Log.Warn("waiting for the event stream", "err", err)
	})
	if err != nil {
		return err
	}
	p.Log.Info("projector running", "read_model", p.ReadModelPath, "stream", p.Stream)
	return p.follow(ctx, st, db)
}

// follow applies the stream to db until ctx ends, resuming after errors.
func (p *Projector) follow(ctx context.Context, st *eventstore.Store, db *projections.DB) error {
	batch := p.BatchSize
	if batch <= 0 {
		batch = 1000
	}
	backoff := 100 * time.Millisecond
	for {
		last, err := db.LastSeq(ctx)
		if err != nil {
			return err
		}
		err = st.Follow(ctx, last+1, batch, func(msgs []eventstore.Msg) error {
			applied, err := db.Apply(ctx, decode(msgs, p.Log))
			if err != nil {
				return err
			}
			backoff = 100 * time.Millisecond
			p.announce(st, db, applied.LastSeq)
			if !p.NoShred {
				p.shred(ctx, st, applied.Shredded)
			}
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, projections.ErrGap) {
			p.Log.Info("resuming from the read model's sequence", "err", err)
			continue
		}
		p.Log.Warn("projector interrupted; resuming", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// decode turns stream messages into records; an undecodable message becomes
// a record without event, which only advances the sequence.
func decode(msgs []eventstore.Msg, log *slog.Logger) []events.Record {
	recs := make([]events.Record, len(msgs))
	for i, m := range msgs {
		r, err := events.Unmarshal(m.Data)
		if err != nil {
			log.Error("skipping undecodable event", "seq", m.Seq, "err", err)
			r = events.Record{}
		}
		r.Sequence = m.Seq
		recs[i] = r
	}
	return recs
}

// announce tells the readers of db that it has applied seq (core NATS, at
// most once: readers fall back to reading db when one is lost).
func (p *Projector) announce(st *eventstore.Store, db *projections.DB, seq uint64) {
	if err := eventstore.PublishApplied(st.NC, st.Config().Stream, db.InstanceID(), seq); err != nil {
		p.Log.Debug("announcing the applied sequence failed", "seq", seq, "err", err)
	}
}

func (p *Projector) shred(ctx context.Context, st *eventstore.Store, ids []string) {
	for _, id := range ids {
		if err := st.DestroyKey(ctx, id); err != nil {
			p.Log.Warn("destroying data key failed; will retry on replay", "credential_id", id, "err", err)
		}
	}
}
