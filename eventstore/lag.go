package eventstore

import (
	"context"
	"errors"
	"time"
)

// StoredAt returns when the event at seq was stored in the stream, or the
// first event after it (a gap left by a deleted message). It is one message
// get; the metrics use it for the age of the oldest unapplied event.
func (s *Store) StoredAt(ctx context.Context, seq uint64) (time.Time, error) {
	m, err := s.events.next(ctx, "vault.>", seq)
	if errors.Is(err, ErrNotFound) {
		return time.Time{}, ErrKeyNotFound
	}
	if err != nil {
		return time.Time{}, err
	}
	return m.Time, nil
}
