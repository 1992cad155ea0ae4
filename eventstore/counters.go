package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrLimitReached is returned by Counters.Reserve when the count is at its maximum.
var ErrLimitReached = errors.New("eventstore: limit reached")

// CountersBucket is the name of the key-value bucket of operator-limit counters.
func (c Config) CountersBucket() string { return c.Stream + "_COUNTERS" }

// Counters are small integer counters in a JetStream key-value bucket,
// changed only by compare-and-set, so concurrent API replicas never count
// past a maximum. The bucket exists only when an operator limit is set.
type Counters struct {
	kv jetstream.KeyValue
}

// OpenCounters binds to (creating when needed) the counters bucket.
func OpenCounters(ctx context.Context, s *Store) (*Counters, error) {
	kv, err := s.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      s.cfg.CountersBucket(),
		Description: "MCP Vault operator-limit counters (servers per owner, credentials per server); no secrets",
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: bucket %s: %v", ErrUnavailable, s.cfg.CountersBucket(), err)
	}
	return &Counters{kv: kv}, nil
}

// maxCASRetries bounds the compare-and-set loop under contention.
const maxCASRetries = 50

// Reserve adds one to key's count unless it already is max or more
// (ErrLimitReached). It costs one get and one compare-and-set write.
func (c *Counters) Reserve(ctx context.Context, key string, max int) error {
	for range maxCASRetries {
		n, rev, err := c.get(ctx, key)
		if err != nil {
			return err
		}
		if n >= max {
			return ErrLimitReached
		}
		if err := c.set(ctx, key, n+1, rev); !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: counter %s: too much contention", ErrUnavailable, key)
}

// Release takes one from key's count (never below zero); a count that
// reaches zero is deleted, so keys do not pile up.
func (c *Counters) Release(ctx context.Context, key string) error {
	for range maxCASRetries {
		n, rev, err := c.get(ctx, key)
		if err != nil || rev == 0 {
			return err
		}
		if n <= 1 {
			err = c.kv.Delete(ctx, key, jetstream.LastRevision(rev))
			if err == nil {
				return nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
			continue
		}
		if err := c.set(ctx, key, n-1, rev); !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: counter %s: too much contention", ErrUnavailable, key)
}

// Forget deletes key's count (its aggregate is gone).
func (c *Counters) Forget(ctx context.Context, key string) error {
	if err := c.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// Count returns key's count (0 when none).
func (c *Counters) Count(ctx context.Context, key string) (int, error) {
	n, _, err := c.get(ctx, key)
	return n, err
}

// get returns the count and its revision (0 when the key has none).
func (c *Counters) get(ctx context.Context, key string) (int, uint64, error) {
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	n, err := strconv.Atoi(string(e.Value()))
	if err != nil || n < 0 {
		return 0, 0, fmt.Errorf("eventstore: counter %s holds %q", key, e.Value())
	}
	return n, e.Revision(), nil
}

// set writes n under key if key is still at revision rev (0 = absent).
func (c *Counters) set(ctx context.Context, key string, n int, rev uint64) error {
	var err error
	v := []byte(strconv.Itoa(n))
	if rev == 0 {
		_, err = c.kv.Create(ctx, key, v)
	} else {
		_, err = c.kv.Update(ctx, key, v, rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return ErrConflict
	case err != nil:
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}
