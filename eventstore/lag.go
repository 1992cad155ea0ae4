package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StoredAt returns when the event at seq was stored in the stream, or the
// first event after it (a gap left by a deleted message). It is one direct
// get; the metrics use it for the age of the oldest unapplied event.
func (s *Store) StoredAt(ctx context.Context, seq uint64) (time.Time, error) {
	m, err := s.events.GetMsg(ctx, seq, jetstream.WithGetMsgSubject("vault.>"))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, ErrKeyNotFound
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return m.Time, nil
}
