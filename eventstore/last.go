package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Last is the last message stored on a literal subject of the event stream.
type Last struct {
	Seq    uint64 // 0 when the subject holds nothing
	Data   []byte
	Header nats.Header
}

// LastOnSubject returns the last event on a literal subject: what a chained
// event appended there links to, and the sequence it expects.
func (s *Store) LastOnSubject(ctx context.Context, subject string) (Last, error) {
	m, err := s.events.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Last{}, nil
	}
	if err != nil {
		return Last{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return Last{Seq: m.Sequence, Data: m.Data, Header: m.Header}, nil
}
