package app

import (
	"context"
	"errors"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/metrics"
)

// Intent fixes the identity of one write before its first attempt: the id a
// create gives its resource and the id of the event it appends (its
// Nats-Msg-Id). Every attempt of the write — a retry after a lost race, a
// publish repeated after a lost acknowledgement, a client's retry with the
// same Idempotency-Key after the API died — uses the same ids, so the stream
// stores the write at most once and a later attempt can find it.
type Intent struct {
	// ID is the ULID of the resource a create makes.
	ID ulid.ULID
	// EventID is the id of the write's event.
	EventID string
	// Since is when an earlier attempt of this write began, if there was
	// one that may have stored its event; zero for a first attempt.
	Since time.Time
	// key is the stored data key of ID, for a create's first attempt that
	// took one from the pool (NewCreateIntent).
	key *pooledKey
	// recorded: the intent may be in an idempotency record, so a retry
	// may take it over and reuse its stored key (DiscardIntent keeps it).
	recorded bool
}

// NewIntent returns the intent of a first attempt.
func (v *Vault) NewIntent() Intent {
	t := v.now()
	return Intent{ID: v.newULID(t), EventID: v.newULID(t).String()}
}

// Written is where a write's last event is in the stream (0: the write
// changed nothing and stored no event).
type Written struct {
	Seq uint64
}

// errRetry is an internal signal: the expectation failed; reload and decide again.
var errRetry = errors.New("app: expected sequence failed")

// writeContext detaches a write from its client: once decided, a write runs
// to completion (or to the write timeout) even if the client hangs up, so
// that a stored event is never answered, or compensated, as not stored.
func (v *Vault) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := v.WriteTimeout
	if timeout == 0 {
		timeout = 4 * time.Second
	}
	return context.WithTimeout(context.WithoutCancel(ctx), timeout)
}

// appendEvent appends one decided event under an expectation on a literal
// subject. It maps the store's answers: errRetry (refused: a concurrent
// write won), ErrUnavailable (certainly not stored), ErrOutcomeUnknown.
func (v *Vault) appendEvent(ctx context.Context, st *eventstore.Store, rec events.Record, expectSubject string, expectSeq uint64) (uint64, error) {
	body, err := events.Marshal(rec.Meta, rec.Event)
	if err != nil {
		return 0, err
	}
	opts := []eventstore.AppendOption{eventstore.MsgID(rec.ID)}
	if expectSubject != "" {
		opts = append(opts, eventstore.ExpectLast(expectSubject, expectSeq))
	}
	subject := events.SubjectOf(rec)
	signed, err := v.sign(ctx, st, subject, body, rec, expectSubject, expectSeq) // app/sign.go
	if err != nil {
		return 0, err
	}
	opts = append(opts, signed...)
	start := time.Now()
	ack, err := st.Append(ctx, subject, body, opts...)
	switch {
	case err == nil:
		v.Metrics.ObservePublish(metrics.PublishOK, time.Since(start))
	case errors.Is(err, eventstore.ErrConflict):
		v.Metrics.ObservePublish(metrics.PublishConflict, time.Since(start))
	default:
		v.Metrics.ObservePublish(metrics.PublishError, time.Since(start))
	}
	switch {
	case err == nil:
		v.signed(subject, ack.Seq, body)
		return ack.Seq, nil
	case errors.Is(err, eventstore.ErrConflict):
		return 0, errRetry
	case errors.Is(err, eventstore.ErrUnknownOutcome):
		v.Log.Warn("append outcome unknown", "subject", events.SubjectOf(rec), "err", err)
		return 0, ErrOutcomeUnknown
	default:
		v.Log.Warn("append failed", "subject", events.SubjectOf(rec), "err", err)
		return 0, ErrUnavailable
	}
}

// retries bounds how often a write decides again after a lost race.
const retries = 16

// decideAndAppend runs the optimistic loop of one aggregate: load its state
// (from the cache first, then fresh after each lost race), decide, append
// with the state's version as the expectation on subject. decide returns
// the record to append, or none when nothing changes. The event id is the
// intent's on every attempt.
func decideAndAppend[T any](ctx context.Context, v *Vault, st *eventstore.Store, in Intent, subject string,
	load func(fresh bool) (T, uint64, error),
	decide func(state T) (T, []events.Record, error),
	keep func(state T, seq uint64) T) (T, Written, error) {
	var zero T
	for attempt := 0; attempt < retries; attempt++ {
		state, version, err := load(attempt > 0)
		if err != nil {
			return zero, Written{}, err
		}
		next, recs, err := decide(state)
		if err != nil {
			return zero, Written{}, err
		}
		if len(recs) == 0 { // nothing changes: the answer is the state as it is
			return next, Written{Seq: version}, nil
		}
		rec := recs[0]
		rec.ID = in.EventID
		seq, err := v.appendEvent(ctx, st, rec, subject, version)
		if errors.Is(err, errRetry) {
			backoff(ctx, attempt)
			continue
		}
		if err != nil {
			return zero, Written{}, err
		}
		return keep(next, seq), Written{Seq: seq}, nil
	}
	return zero, Written{}, domain.ErrConflict
}

// backoff waits a little, more after each lost race, so that writers that
// keep colliding spread out.
func backoff(ctx context.Context, attempt int) {
	if attempt == 0 {
		return
	}
	d := time.Duration(attempt) * 500 * time.Microsecond
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// storedEarlier looks, for a write that an earlier attempt may have stored,
// for its event on subject. It returns the aggregate's state as of that
// event (the fold of the subject's first message and it) — enough to give
// the earlier attempt's answer again — and its sequence.
func storedEarlier[T any](ctx context.Context, st *eventstore.Store, in Intent, subject string, fold func(T, events.Record) T) (T, uint64, bool, error) {
	var state T
	if in.Since.IsZero() {
		return state, 0, false, nil
	}
	// Clocks of API replicas differ a little; the stream's time is its own.
	m, found, err := st.FindMsgID(ctx, subject, in.EventID, in.Since.Add(-30*time.Second))
	if err != nil {
		return state, 0, false, ErrUnavailable
	}
	if !found {
		return state, 0, false, nil
	}
	first, err := st.First(ctx, subject)
	if err != nil {
		return state, 0, false, ErrUnavailable
	}
	for _, msg := range dedupe(first, m) {
		r, err := decode(msg)
		if err != nil {
			return state, 0, false, err
		}
		state = fold(state, r)
	}
	return state, m.Seq, true, nil
}
