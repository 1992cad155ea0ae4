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

// IdemGet returns the value and revision under key (ErrKeyNotFound if none),
// as the bucket's leader has it: a KV get may be answered by a replica that
// has not applied the newest revision yet, and a retry must see the answer
// its first attempt remembered.
func (s *Store) IdemGet(ctx context.Context, key string) ([]byte, uint64, error) {
	m, err := s.idemGet.last(ctx, "$KV."+s.cfg.IdempotencyBucket()+"."+key)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, ErrKeyNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, 0, ErrKeyNotFound
	}
	return m.Data, m.Seq, nil
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
