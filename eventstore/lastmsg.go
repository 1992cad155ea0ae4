package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
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

// LastSeqOf returns the highest sequence among the newest events of the
// given literal subjects (0 when none has any), in one batched direct get.
// A reader waits for the read model to reach it to see every change of
// those subjects answered before the call, without waiting for unrelated
// events (such as the use events the MCP endpoint keeps appending).
func (s *Store) LastSeqOf(ctx context.Context, subjects ...string) (uint64, error) {
	msgs, err := jetstreamext.GetLastMsgsFor(ctx, s.JS, s.cfg.Stream, subjects)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var last uint64
	for m, err := range msgs {
		if err != nil {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				break
			}
			return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		last = max(last, m.Sequence)
	}
	return last, nil
}
