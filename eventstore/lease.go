package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaseHeld: another process holds the lease.
var ErrLeaseHeld = errors.New("eventstore: lease held by another process")

// LeaseBucket is the key-value bucket of leases (one key per singleton job).
func (c Config) LeaseBucket() string { return c.Stream + "_LEASES" }

// Lease is the right to run a singleton job (such as the expiry scheduler)
// on one replica at a time. It is a key in a JetStream key-value bucket whose
// entries expire after the lease's TTL: Create succeeds only while the key
// is absent, Renew is a compare-and-set on the revision, so a holder that
// stops renewing (crashed, partitioned) loses the lease after the TTL and
// another replica's Acquire succeeds.
type Lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string
	rev    uint64
}

// AcquireLease tries once to take the lease name for holder; ErrLeaseHeld
// when another holder has it.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (*Lease, error) {
	kv, err := s.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: s.cfg.LeaseBucket(), Description: "MCP Vault singleton job leases",
		TTL: ttl, History: 1, Storage: jetstream.FileStorage, Replicas: s.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	rev, err := kv.Create(ctx, name, []byte(holder))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, ErrLeaseHeld
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return &Lease{kv: kv, key: name, holder: holder, rev: rev}, nil
}

// Renew extends the lease; an error means it is lost (stop the job).
func (l *Lease) Renew(ctx context.Context) error {
	rev, err := l.kv.Update(ctx, l.key, []byte(l.holder), l.rev)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLeaseHeld, err)
	}
	l.rev = rev
	return nil
}

// Release gives the lease up at once (a clean stop), if still held.
func (l *Lease) Release(ctx context.Context) {
	_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
}
