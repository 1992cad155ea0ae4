// Package app is the vault's application layer. Commands load their
// aggregate's state from the event stream (state.go), let the domain
// decide, seal secrets, append the events with optimistic concurrency on
// literal subjects (write.go) and destroy data keys; queries read the
// SQLite read model after the read-your-writes barrier. The HTTP adapter
// calls it; it knows nothing of HTTP.
package app

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/metrics"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
)

// Errors of the application layer besides domain errors.
var (
	// ErrUnavailable: the event stream cannot take the write; nothing was stored.
	ErrUnavailable = errors.New("The event stream is unavailable; nothing was stored. Retry later.")
	// ErrOutcomeUnknown: the write was sent but the stream's answer did not
	// come in time; it may be stored. A retry with the same Idempotency-Key
	// is answered as the write turned out.
	ErrOutcomeUnknown = errors.New("The event stream did not confirm the write in time; it may have been stored. " +
		"Retry with the same Idempotency-Key to learn its outcome.")
	// ErrReadModelBehind: the read model did not catch up within the bound.
	ErrReadModelBehind = errors.New("The read model is behind the event stream; retry shortly.")
)

// Vault is the application service.
type Vault struct {
	DB     *projections.DB
	Keys   *seal.Keyring
	Log    *slog.Logger
	Now    func() time.Time
	Tester Tester // issue-4 upstream tester; may be nil
	// Audit signs every appended event and links state changes into their
	// aggregate's chain (package audit); nil appends unsigned events.
	Audit *audit.Keyring
	// UnsignedUntil accepts unsigned events up to this sequence when loading
	// (a stream written before events were signed).
	UnsignedUntil uint64

	// SyncTimeout bounds how long a read waits for the read model (default 5 s).
	SyncTimeout time.Duration
	// WriteTimeout bounds one write, detached from its client (default 4 s,
	// so a 503 comes within 5 s).
	WriteTimeout time.Duration
	// CacheSize bounds the command side's cache of servers and of
	// credentials (default 100,000 each).
	CacheSize int

	cmdOnce sync.Once
	cmd     *commandState
	links   linkCache // app/sign.go
	// Limits are the operator caps (see limits.go); zero = off.
	Limits Limits
	// KeyPool pre-stores data keys so that a create is one durable publish
	// (app/keypool.go); zero Size = off.
	KeyPool KeyPoolConfig
	// Metrics receives the write path's series (publish latency, held
	// aggregates); nil is a no-op.
	Metrics *metrics.Metrics

	limits limitState

	store   atomic.Pointer[eventstore.Store]
	barrier barrier // the read barrier (barrier.go)
	entropy struct {
		sync.Mutex
		src *ulid.MonotonicEntropy
	}
	poolOnce sync.Once
	pool     *keyPool
	proxy    proxyState // MCP endpoint: use queue and approvals (app/use.go, app/proxy.go)
}

// SetStore makes the stream available (it may be bound after start-up).
func (v *Vault) SetStore(s *eventstore.Store) { v.store.Store(s) }

// Store returns the bound store or nil.
func (v *Vault) Store() *eventstore.Store { return v.store.Load() }

func (v *Vault) now() events.Time {
	if v.Now != nil {
		return events.NewTime(v.Now())
	}
	return events.NewTime(time.Now())
}

func (v *Vault) newULID(t events.Time) ulid.ULID {
	v.entropy.Lock()
	defer v.entropy.Unlock()
	if v.entropy.src == nil {
		v.entropy.src = ulid.Monotonic(rand.Reader, 0)
	}
	return ulid.MustNew(ulid.Timestamp(t.Time), v.entropy.src)
}

// marshalWrapped is how a wrapped data key is stored in the keys stream.
func marshalWrapped(w seal.WrappedKey) []byte {
	b, _ := json.Marshal(w)
	return b
}
