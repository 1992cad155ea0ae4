package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StoredKey is one wrapped data key in the keys stream (its bytes not read).
type StoredKey struct {
	CredentialID string
	Stored       time.Time
}

// ListKeys lists every data key in the keys stream, with when it was
// stored, reading headers only (the wrapped keys never leave the server).
func (s *Store) ListKeys(ctx context.Context) ([]StoredKey, error) {
	info, err := s.keys.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := s.JS.OrderedConsumer(ctx, s.cfg.KeysStreamName(), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy,
		HeadersOnly:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer it.Stop()
	prefix := s.cfg.keySubject("")
	var out []StoredKey
	for {
		// Keys destroyed while the walk runs (the data-key pool destroys
		// unused ones all the time) may be the ones NumPending still
		// counted: a walk that waits a while for nothing ends with what it
		// has (a key it missed is swept next time).
		nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		if id, ok := strings.CutPrefix(m.Subject(), prefix); ok {
			out = append(out, StoredKey{CredentialID: id, Stored: md.Timestamp})
		}
		if md.NumPending == 0 {
			return out, nil
		}
	}
}

// LastEvent returns the newest event of the event stream on filter (which
// may hold wildcards: this is a lookup for sweeps, not for the write path)
// and whether there is one.
func (s *Store) LastEvent(ctx context.Context, filter string) (subject string, data []byte, found bool, err error) {
	// The JSON API (leaderGets), not a direct get: direct gets take the
	// filter in their subject, where wildcards are not allowed. Bounded by
	// ctx alone (no attempt timeout): a wildcard lookup may take a while.
	m, err := leaderGets{nc: s.NC, subject: s.events.subject}.get(ctx, msgGetRequest{LastFor: filter})
	switch {
	case errors.Is(err, ErrNotFound):
		return "", nil, false, nil
	case err != nil:
		return "", nil, false, err
	}
	return m.Subject, m.Data, true, nil
}
