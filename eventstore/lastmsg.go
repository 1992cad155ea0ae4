package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// LastOnSubject returns the data and sequence of the newest event on a
// literal subject of the event stream, or seq 0 and no data when the subject
// has none. It is how the command side reads the state it decides on (for
// instance a server's recorded tool inventory) without the read model.
func (s *Store) LastOnSubject(ctx context.Context, subject string) ([]byte, uint64, error) {
	m, err := s.events.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return m.Data, m.Sequence, nil
}
