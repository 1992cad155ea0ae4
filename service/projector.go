package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
)

// Projector consumes the event stream in order and applies it to the SQLite
// read model, with the last applied sequence in the same transaction.
//
// Decoding runs ahead of applying: the next batch is decoded while the
// current one commits. After each commit the projector announces the applied
// sequence on core NATS (eventstore.AppliedSubject) from its own goroutine, so
// a slow or absent NATS never holds the projection up.
//
// An event this build cannot decode holds its server tree (see
// projections.DB.Apply); at start the projector applies the held events a
// newer build now knows (projections.DB.Release).
//
// Data keys to destroy are recorded in the read model in the transaction
// that projects the revoke or delete; a shredder goroutine destroys them and
// retries with back-off until it succeeds, across restarts. A periodic sweep
// destroys keys left in the keys stream of credentials that are revoked,
// deleted, or were never stored (a create that failed after its key).
type Projector struct {
	NATSURL string
	// NATSAuth is the projector's NATS identity (role projector unless set).
	NATSAuth      eventstore.Auth
	Stream        string
	Replicas      int // stream replicas when the vault creates them (default 1)
	ReadModelPath string
	Log           *slog.Logger
	// BatchSize is the most events applied in one transaction (default
	// DefaultBatchSize). A live tail commits what has arrived, so only a
	// backlog fills a batch.
	BatchSize int
	// NoShred records due destructions but does not perform them (the
	// shredder and the sweep do not run).
	NoShred bool
	// SweepInterval is how often the keys stream is swept (default 10
	// minutes; negative: never). The first sweep runs one interval after start.
	SweepInterval time.Duration
	// SweepGrace is how old a key with no credential event must be before
	// the sweep destroys it as the leftover of a failed create. Default 25
	// hours: a retry of the create under its Idempotency-Key (24 hours)
	// reuses a key its first attempt stored, so a younger key may still get
	// its event. Such a key protects no stored secret, so nothing is lost by
	// waiting.
	SweepGrace time.Duration
	// DestroyFault, when set, is called before each key destruction; an
	// error fails that destruction as the keys stream would (fault
	// injection for tests).
	DestroyFault func(credentialID string) error
	// Now is the clock of the sweep (default time.Now).
	Now func() time.Time
	// AuditKeys, when set, verifies the signature of every event before it
	// is applied (package audit): an event that does not verify holds its
	// server tree like an event this build cannot decode, until an operator
	// rejects it (vaultctl audit reject), which releases the tree.
	AuditKeys *audit.Keyring
	// UnsignedUntil accepts unsigned events up to this sequence: a stream
	// written before events were signed (VAULT_AUDIT_UNSIGNED_UNTIL).
	UnsignedUntil uint64

	shredWake chan struct{}
	announced atomic.Uint64
	announce  chan struct{}
}

// DefaultBatchSize is the most events the projector applies in one
// transaction when catching up. A commit's cost grows with the pages it
// writes, not with its rows: with 5,000 events a commit instead of 1,000
// the catch-up of 100,000 signed events ran at 26,600–26,800 events/s
// instead of 19,100 (docs/benchmarks.md).
const DefaultBatchSize = 5000

// Run projects until ctx ends. It reconnects and resumes by itself, and
// opens the read model path again when a rebuild publishes a new file there.
func (p *Projector) Run(ctx context.Context) error {
	for {
		err := p.run(ctx)
		if !errors.Is(err, projections.ErrMoved) || ctx.Err() != nil {
			return err
		}
		p.Log.Info("the read model path names a new file (a rebuild published it); opening it", "read_model", p.ReadModelPath)
	}
}

// moveCheck is how often an idle projector looks whether a rebuild
// published a new read model file (a batch looks at every commit).
const moveCheck = 500 * time.Millisecond

// run projects into the file the read model path names until ctx ends or
// the path names another (projections.ErrMoved).
func (p *Projector) run(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	db, err := projections.Open(ctx, p.ReadModelPath, projections.Writer)
	if err != nil {
		return err
	}
	defer db.Close()
	go func() {
		t := time.NewTicker(moveCheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if db.Moved() {
					cancel(projections.ErrMoved)
					return
				}
			}
		}
	}()
	if err := p.project(ctx, db); err != nil {
		return err
	}
	if errors.Is(context.Cause(ctx), projections.ErrMoved) {
		return projections.ErrMoved
	}
	return nil
}

// project projects into db until ctx ends.
func (p *Projector) project(ctx context.Context, db *projections.DB) error {
	nc, err := eventstore.Dial(p.NATSURL, "vault-projector", projectorAuth(p.NATSAuth, p.Log))
	if err != nil {
		return err
	}
	defer nc.Close()
	// The projector binds to the streams the API creates: its NATS user may
	// not create or change streams.
	st, err := eventstore.BindWhenReady(ctx, nc, eventstore.Config{Stream: p.Stream, Replicas: p.Replicas}, func(err error) {
		p.Log.Warn("waiting for the event stream", "err", err)
	})
	if ctx.Err() != nil {
		return nil // stopped before the stream was created
	}
	if err != nil {
		return err
	}
	p.Log.Info("projector running", "read_model", p.ReadModelPath, "stream", p.Stream)
	p.shredWake = make(chan struct{}, 1)
	p.announce = make(chan struct{}, 1)
	p.announced.Store(0) // a file opened again announces from its own sequence
	db.VerifyWith(p.AuditKeys, p.UnsignedUntil)
	// Events held by an older build are applied first, if this one knows them.
	if rel, err := db.Release(ctx); err != nil {
		p.Log.Error("applying held events failed; they stay held", "err", err)
	} else if len(rel.Released) > 0 {
		p.Log.Info("released held server trees", "servers", rel.Released)
	}
	p.logHolds(ctx, db)

	var wg sync.WaitGroup
	defer wg.Wait()
	gctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Add(1)
	go func() { defer wg.Done(); p.announcer(gctx, st, db.InstanceID()) }()
	if !p.NoShred {
		wg.Add(2)
		go func() { defer wg.Done(); p.shredder(gctx, st, db) }()
		go func() { defer wg.Done(); p.sweeper(gctx, st, db) }()
		p.wakeShredder()
	}
	return p.follow(ctx, st, db)
}

func (p *Projector) logHolds(ctx context.Context, db *projections.DB) {
	holds, err := db.Holds(ctx)
	if err != nil {
		return
	}
	for _, h := range holds {
		p.Log.Error("server held: this build cannot apply one of its events; upgrade the projector",
			"server_id", h.ServerID, "seq", h.Seq, "event_type", h.EventType, "event_version", h.Version,
			"pending_events", h.Pending, "reason", h.Reason)
	}
}

// follow applies the stream to db until ctx ends, resuming after errors.
func (p *Projector) follow(ctx context.Context, st *eventstore.Store, db *projections.DB) error {
	backoff := 100 * time.Millisecond
	for {
		last, err := db.AppliedSeq(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err = p.pipeline(ctx, st, db, last+1, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, projections.ErrMoved) {
			return err
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

// pipeline runs one subscription from start and applies it to db.
func (p *Projector) pipeline(ctx context.Context, st *eventstore.Store, db *projections.DB, start uint64, progressed func()) error {
	limit := p.BatchSize
	if limit <= 0 {
		limit = DefaultBatchSize
	}
	return applyStream(ctx, st, db, p.AuditKeys, p.UnsignedUntil, start, limit, func(applied projections.Applied) bool {
		if len(applied.Released) > 0 {
			p.Log.Info("released held server trees after a rejection", "servers", applied.Released)
		}
		progressed()
		p.published(applied.LastSeq)
		for _, h := range applied.Held {
			p.Log.Error("holding server: this build cannot apply its event, or it does not verify (see reason); the server answers 503 until the projector is upgraded or the event rejected",
				"server_id", h.ServerID, "seq", h.Seq, "event_type", h.EventType, "event_version", h.Version, "reason", h.Reason)
		}
		if len(applied.Shredded) > 0 {
			p.wakeShredder()
		}
		return false
	})
}

// applyStream follows the stream from start and applies it to db: the
// fetching goroutine decodes each batch and hands it over while this one
// applies and commits the previous one, merging batches that queued up
// meanwhile into one transaction of at most limit events. after is called
// after each commit; when it returns true applyStream returns nil. Otherwise
// it returns the first error of either side.
func applyStream(ctx context.Context, st *eventstore.Store, db *projections.DB, keys *audit.Keyring, unsignedUntil, start uint64, limit int,
	after func(projections.Applied) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	decoded := make(chan []projections.Msg, 2)
	fetchErr := make(chan error, 1)
	go func() {
		defer close(decoded)
		fetchErr <- st.Follow(ctx, start, limit, func(msgs []eventstore.Msg) error {
			out := DecodeVerified(msgs, keys, unsignedUntil)
			select {
			case decoded <- out:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	stop := func() {
		cancel()
		for range decoded {
		}
	}
	for batch := range decoded {
		// Take whatever else is already decoded, up to the batch limit.
	merge:
		for len(batch) < limit {
			select {
			case more, ok := <-decoded:
				if !ok {
					break merge
				}
				batch = append(batch, more...)
			default:
				break merge
			}
		}
		applied, err := db.Apply(ctx, batch)
		if err != nil {
			stop()
			return err
		}
		if after(applied) {
			stop()
			return nil
		}
	}
	return <-fetchErr
}

// Decode decodes a batch of stream messages for projections.DB.Apply; a
// large batch is decoded in two halves at once (decoding is the projector's
// largest CPU cost, and it touches no shared state).
func Decode(msgs []eventstore.Msg) []projections.Msg { return DecodeVerified(msgs, nil, 0) }

// DecodeVerified is Decode that also checks each message's audit signature
// with keys (nil: no check): a message that does not verify gets the break as
// its Err, so Apply holds its tree (the Apply that applies an operator's
// rejection of that sequence releases it). Verifying here keeps the Ed25519 work off the
// apply path, in the decoding goroutines, each half's signatures in one
// batch verification (audit.Keyring.VerifyAll).
// Unsigned messages up to unsignedUntil (a legacy stream) are not checked.
func DecodeVerified(msgs []eventstore.Msg, keys *audit.Keyring, unsignedUntil uint64) []projections.Msg {
	out := make([]projections.Msg, len(msgs))
	decode := func(lo, hi int) {
		var (
			check  []int
			signed []audit.Signed
		)
		for i := lo; i < hi; i++ {
			out[i] = projections.Decode(msgs[i].Seq, msgs[i].Subject, msgs[i].Data)
			out[i].Header = msgs[i].Header
			legacy := msgs[i].Seq <= unsignedUntil && msgs[i].Header.Get(audit.HeaderSig) == ""
			if keys != nil && out[i].Err == nil && !legacy {
				check = append(check, i)
				signed = append(signed, audit.Signed{Subject: msgs[i].Subject, Body: msgs[i].Data, Header: msgs[i].Header})
			}
		}
		if len(check) == 0 {
			return
		}
		for j, err := range keys.VerifyAll(signed) {
			if i := check[j]; err != nil {
				out[i].Err = &audit.Break{Seq: msgs[i].Seq, Subject: msgs[i].Subject, Err: err}
			}
		}
	}
	if len(msgs) < 256 {
		decode(0, len(msgs))
		return out
	}
	half := len(msgs) / 2
	done := make(chan struct{})
	go func() { decode(half, len(msgs)); close(done) }()
	decode(0, half)
	<-done
	return out
}

// published hands the newest applied sequence to the announcer without
// waiting: only the newest matters, so announcements coalesce.
func (p *Projector) published(seq uint64) {
	if seq <= p.announced.Load() {
		return
	}
	p.announced.Store(seq)
	select {
	case p.announce <- struct{}{}:
	default:
	}
}

// announcer publishes the newest applied sequence on core NATS after each
// commit, for readers of this read model that wait on it.
func (p *Projector) announcer(ctx context.Context, st *eventstore.Store, instance string) {
	var sent uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.announce:
		}
		seq := p.announced.Load()
		if seq == sent {
			continue
		}
		if err := eventstore.PublishApplied(st.NC, st.Config().Stream, instance, seq); err != nil {
			p.Log.Debug("announcing the applied sequence failed", "seq", seq, "err", err)
			continue
		}
		sent = seq
	}
}

func (p *Projector) wakeShredder() {
	select {
	case p.shredWake <- struct{}{}:
	default:
	}
}

// shredPage is how many pending destructions the shredder takes at a time.
const shredPage = 256

// shredder destroys the data keys recorded in pending_shreds, removing each
// record once its key is gone, and retries failures with back-off (200 ms
// doubling to 30 s) until they succeed. It also looks every 30 s in case a
// record was made by another writer (a rebuild's swap).
func (p *Projector) shredder(ctx context.Context, st *eventstore.Store, db *projections.DB) {
	const minBackoff, maxBackoff = 200 * time.Millisecond, 30 * time.Second
	backoff := minBackoff
	wait := time.Duration(0)
	for {
		if wait > 0 && !p.sleep(ctx, wait, backoff == minBackoff) {
			return
		}
		pending, err := db.PendingShreds(ctx, shredPage)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			p.Log.Warn("reading pending key destructions failed", "err", err)
			wait = backoff
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		if len(pending) == 0 {
			backoff, wait = minBackoff, 30*time.Second
			continue
		}
		var done []string
		failed := map[string]string{}
		for _, ps := range pending {
			if err := p.destroy(ctx, st, ps.CredentialID); err != nil {
				if ctx.Err() != nil {
					return
				}
				failed[ps.CredentialID] = err.Error()
				continue
			}
			done = append(done, ps.CredentialID)
		}
		if err := db.ShredsDone(ctx, done, failed); err != nil && ctx.Err() == nil && !errors.Is(err, projections.ErrMoved) {
			p.Log.Warn("recording key destructions failed; they are repeated", "err", err)
		}
		switch {
		case len(failed) > 0:
			p.Log.Warn("destroying data keys failed; retrying", "failed", len(failed), "destroyed", len(done), "in", backoff)
			wait = backoff
			backoff = min(2*backoff, maxBackoff)
		case len(pending) == shredPage:
			backoff, wait = minBackoff, 0 // more to do
		default:
			backoff, wait = minBackoff, 0 // look again: new records may have come
		}
	}
}

// sleep waits for d, or less when woken and wakeable; false when ctx ended.
func (p *Projector) sleep(ctx context.Context, d time.Duration, wakeable bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-p.shredWake:
			if wakeable {
				return true
			}
			// A wake-up during back-off does not shorten it.
		}
	}
}

// destroy destroys one data key, bounded in time.
func (p *Projector) destroy(ctx context.Context, st *eventstore.Store, credentialID string) error {
	if p.DestroyFault != nil {
		if err := p.DestroyFault(credentialID); err != nil {
			return err
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return st.DestroyKey(dctx, credentialID)
}

// projectorAuth defaults the role of the projector's (and a rebuild's) NATS identity.
func projectorAuth(a eventstore.Auth, log *slog.Logger) eventstore.Auth {
	if a.Role == "" {
		a.Role = eventstore.RoleProjector
	}
	if a.Log == nil {
		a.Log = log
	}
	return a
}
