package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PutKey stores a credential's wrapped data key. Like Append it resolves a
// lost acknowledgement by publishing again with the same message id (the
// keys stream keeps one message per subject, so the retry is harmless); it
// returns ErrUnknownOutcome when ctx ends first.
func (s *Store) PutKey(ctx context.Context, credentialID string, wrapped []byte) error {
	m := nats.NewMsg(s.cfg.keySubject(credentialID))
	m.Data = wrapped
	m.Header.Set(jetstream.MsgIDHeader, "dek-"+credentialID)
	sent := false
	if s.keysBatch != nil {
		res := s.keysBatch.submit(ctx, m)
		if res.ack != nil {
			return nil
		}
		sent = res.uncertain
	}
	wait := 25 * time.Millisecond
	for {
		_, err := s.publishOnce(ctx, m)
		if err == nil {
			return nil
		}
		var apiErr *jetstream.APIError
		switch {
		case errors.As(err, &apiErr), errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
			errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionReconnecting):
		default:
			sent = true
		}
		select {
		case <-ctx.Done():
			if sent {
				return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
			}
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// GetKey returns a credential's wrapped data key, as the keys stream's
// leader has it (a replica may not have applied a just-stored key yet).
func (s *Store) GetKey(ctx context.Context, credentialID string) ([]byte, error) {
	m, err := s.keyGet.last(ctx, s.cfg.keySubject(credentialID))
	if errors.Is(err, ErrNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

// DestroyKey overwrites and removes a credential's wrapped data key
// (SecureDeleteMsg: plain deletes and purges leave the bytes on disk). It is
// idempotent: a key already gone is not an error. The API and the
// projector both destroy a key; a second SecureDeleteMsg fails with a server
// error ("no message found") rather than ErrMsgNotFound, which
// destroySubject (custody.go) treats as gone.
func (s *Store) DestroyKey(ctx context.Context, credentialID string) error {
	return s.destroySubject(ctx, s.cfg.keySubject(credentialID))
}
