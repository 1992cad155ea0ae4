// Package app is the vault's application layer: it loads state from the read
// model, lets the domain decide, seals secrets, appends the events to the
// stream with optimistic concurrency, destroys data keys, and keeps the
// read-your-writes promise. The HTTP adapter calls it; it knows nothing of HTTP.
package app

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
)

// Errors of the application layer besides domain errors.
var (
	// ErrUnavailable: the event stream cannot take the write; nothing was stored.
	ErrUnavailable = errors.New("The event stream is unavailable; nothing was stored. Retry later.")
	// ErrAlreadyStored: an earlier attempt with the same Idempotency-Key
	// stored its event, but its answer was lost (the API stopped meanwhile).
	ErrAlreadyStored = &domain.Error{Kind: domain.KindConflict, Code: "idempotent_request_already_stored",
		Message: "An earlier attempt with this Idempotency-Key was stored but its answer was lost; read the resource instead."}
	// ErrReadModelBehind: the read model did not catch up within the bound.
	ErrReadModelBehind = errors.New("The read model is behind the event stream; retry shortly.")
)

// Vault is the application service.
type Vault struct {
	DB     *projections.DB
	Keys   *seal.Keyring
	Log    *slog.Logger
	Now    func() time.Time
	Tester Tester // issue-4 upstream tester; may be nil

	// SyncTimeout bounds how long a read waits for the read model (default 5 s).
	SyncTimeout time.Duration
	// WriteTimeout bounds one append (default 4 s, so a 503 comes within 5 s).
	WriteTimeout time.Duration

	store   atomic.Pointer[eventstore.Store]
	barrier barrier // the read barrier (barrier.go)
	entropy struct {
		sync.Mutex
		src *ulid.MonotonicEntropy
	}
}

// SetStore makes the stream available (it may be bound after start-up).
func (v *Vault) SetStore(s *eventstore.Store) { v.store.Store(s) }

// Store returns the bound store or nil.
func (v *Vault) Store() *eventstore.Store { return v.store.Load() }

func (v *Vault) now() events.Time {
	if v.Now != nil {
		return events.NewTime(v.Now())
	}
	return events.NewTime(time.Now())
}

func (v *Vault) newULID(t events.Time) ulid.ULID {
	v.entropy.Lock()
	defer v.entropy.Unlock()
	if v.entropy.src == nil {
		v.entropy.src = ulid.Monotonic(rand.Reader, 0)
	}
	return ulid.MustNew(ulid.Timestamp(t.Time), v.entropy.src)
}

// append publishes the events of one decision under server serverID,
// expecting treeSeq as the last sequence under it. It returns the sequence.
func (v *Vault) append(ctx context.Context, serverID string, recs []events.Record, treeSeq uint64, checked bool) (uint64, error) {
	st := v.Store()
	if st == nil {
		return 0, ErrUnavailable
	}
	timeout := v.WriteTimeout
	if timeout == 0 {
		timeout = 4 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var seq uint64
	for _, r := range recs {
		r.ID = v.newULID(r.OccurredAt).String()
		body, err := events.Marshal(r.Meta, r.Event)
		if err != nil {
			return 0, err
		}
		msgID := r.ID
		if k := idempotencyMsgID(ctx); k != "" {
			msgID = k
		}
		subject := events.SubjectFor(serverID, r.AggregateID)
		if checked {
			seq, err = st.Append(ctx, subject, body, msgID, events.ServerTree(serverID), treeSeq)
		} else {
			seq, err = st.AppendUnchecked(ctx, subject, body, msgID)
		}
		switch {
		case errors.Is(err, eventstore.ErrConflict):
			return 0, domain.ErrConflict
		case errors.Is(err, eventstore.ErrDuplicate):
			// Only an Idempotency-Key msg id can repeat: an earlier attempt of
			// this request stored its event but its answer was lost.
			return 0, ErrAlreadyStored
		case err != nil:
			v.Log.Warn("append failed", "subject", subject, "err", err)
			return 0, ErrUnavailable
		}
		treeSeq = seq
	}
	return seq, nil
}

// retries is how often a write is retried internally after losing a race.
const retries = 8

// onServer runs one write under server id: load the server (and whatever
// load adds) from one snapshot of the read model, decide, append with the
// expected tree sequence; on a lost race or a miss, catch up and try again.
func (v *Vault) onServer(ctx context.Context, owner events.Owner, id string,
	decide func(view projections.View, s domain.Server) ([]events.Record, error)) error {
	if !domain.ValidServerID(id) {
		return domain.ErrServerNotFound
	}
	var lastErr error
	for attempt := 0; attempt < retries; attempt++ {
		if attempt > 0 {
			if err := v.Sync(ctx); err != nil {
				return err
			}
		}
		var (
			recs    []events.Record
			treeSeq uint64
		)
		err := v.DB.Snapshot(ctx, func(view projections.View) error {
			s, seq, err := view.GetServer(ctx, owner, id)
			if errors.Is(err, projections.ErrNotFound) {
				return domain.ErrServerNotFound
			}
			if err != nil {
				return err
			}
			treeSeq = seq
			recs, err = decide(view, s)
			return err
		})
		if err != nil {
			// A miss may be a read model that has not seen the create yet.
			if domain.KindOf(err) == domain.KindNotFound && attempt == 0 {
				lastErr = err
				continue
			}
			return err
		}
		if len(recs) == 0 {
			return nil
		}
		_, err = v.append(ctx, id, recs, treeSeq, true)
		if errors.Is(err, domain.ErrConflict) {
			lastErr = err
			continue
		}
		return err
	}
	return lastErr
}

// marshalWrapped is how a wrapped data key is stored in the keys stream.
func marshalWrapped(w seal.WrappedKey) []byte {
	b, _ := json.Marshal(w)
	return b
}
