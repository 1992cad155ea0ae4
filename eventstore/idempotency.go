package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrExists is returned by IdemCreate when the key is already taken.
var ErrExists = errors.New("eventstore: key exists")

// IdemCreate stores value under key unless the key exists (ErrExists).
func (s *Store) IdemCreate(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := s.idem.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return rev, nil
}

// IdemGet returns the value and revision under key (ErrKeyNotFound if none).
func (s *Store) IdemGet(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := s.idem.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrKeyNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return e.Value(), e.Revision(), nil
}

// IdemUpdate replaces the value under key if it is still at revision rev
// (ErrConflict otherwise).
func (s *Store) IdemUpdate(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	r, err := s.idem.Update(ctx, key, value, rev)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return r, nil
}
