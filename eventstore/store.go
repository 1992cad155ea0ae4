// Package eventstore owns the vault's use of NATS JetStream: the connection,
// the event stream, the stream of wrapped data keys, the idempotency bucket
// and the projector's consumer. No other package imports nats.go.
package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors the callers map to answers.
var (
	// ErrConflict: the expected last sequence did not match (a concurrent
	// write won); the message is not stored.
	ErrConflict = errors.New("eventstore: concurrent write")
	// ErrUnavailable: the stream could not take or serve the request; a
	// write is certainly not stored.
	ErrUnavailable = errors.New("eventstore: stream unavailable")
	// ErrUnknownOutcome: a write was sent but no answer came before the
	// deadline; it may or may not be stored.
	ErrUnknownOutcome = errors.New("eventstore: outcome unknown")
	// ErrKeyNotFound: no data key is stored for the credential (never stored or destroyed).
	ErrKeyNotFound = errors.New("eventstore: data key not found")
)

// Config names the streams and how they are replicated.
type Config struct {
	// Stream is the event stream name (VAULT_STREAM).
	Stream string
	// Replicas is the replication factor for new streams (1 embedded, 3 in a cluster).
	Replicas int
	// Duplicates is the deduplication window for Nats-Msg-Id (default 2 minutes).
	Duplicates time.Duration
	// IdempotencyTTL is how long idempotent answers are remembered (default 24 h).
	IdempotencyTTL time.Duration
	// AttemptTimeout bounds one publish attempt or message get (default 1 s).
	// An attempt in flight to a stream leader that stops answers nothing
	// (nor fails on the client's reconnect); it is then sent again with the
	// same Nats-Msg-Id, so this bounds how long writes stall across a leader
	// change. An ack takes milliseconds (tens under sync always and load).
	// An atomic batch (group commit, keys stored ahead) has twice as long:
	// it is acknowledged after its last message is stored, and one that
	// times out is treated as uncertain (sent again message by message).
	AttemptTimeout time.Duration
	// PublishLatency, when set, observes the duration of every Append.
	PublishLatency func(time.Duration)
	// GroupCommit sends the first attempt of concurrent appends together
	// as JetStream atomic batches (batch.go): worth it when the server
	// fsyncs every write (sync_interval: always).
	GroupCommit bool
}

// Store is a connected JetStream client with the vault's streams.
type Store struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	cfg    Config
	stream jetstream.Stream
	keys   jetstream.Stream
	idem   jetstream.KeyValue
	events leaderGets // message gets of the event stream
	keyGet leaderGets // message gets of the keys stream
	// message gets of the idempotency bucket's stream
	idemGet leaderGets

	// group commit (nil when off)
	eventsBatch, keysBatch *committer
	// usesBatch commits the appends marked Grouped (records of uses,
	// which carry no expectation) together, whether group commit is on or not.
	usesBatch *committer
	stop      chan struct{}
	stopOnce  sync.Once
	wg        sync.WaitGroup
	stats     struct{ batches, batched, fallbacks atomic.Uint64 }
}

// Connect dials NATS (comma-separated URLs) and keeps reconnecting forever
// (Dial with the identity in the URL).
func Connect(url, name string) (*nats.Conn, error) {
	return Dial(url, name, Auth{})
}

// KeysStreamName is the name of the stream that holds wrapped data keys.
func (c Config) KeysStreamName() string { return c.Stream + "_KEYS" }

// IdempotencyBucket is the name of the key-value bucket of idempotent answers.
func (c Config) IdempotencyBucket() string { return c.Stream + "_IDEMPOTENCY" }

func (c Config) keySubject(credentialID string) string {
	return "vaultkeys." + strings.ToLower(c.Stream) + ".dek." + credentialID
}

// batchTimeout bounds one atomic batch attempt (see Config.AttemptTimeout).
func (s *Store) batchTimeout() time.Duration { return 2 * s.cfg.AttemptTimeout }

// newStore applies the defaults Open and Bind share and makes the store's
// JetStream handles; the caller binds (or creates) its streams.
func newStore(nc *nats.Conn, cfg Config) (*Store, jetstream.JetStream, error) {
	if cfg.Stream == "" {
		cfg.Stream = "VAULT"
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = time.Second
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	return &Store{NC: nc, JS: js, cfg: cfg,
		events:  newLeaderGets(nc, cfg.Stream, cfg.AttemptTimeout),
		keyGet:  newLeaderGets(nc, cfg.KeysStreamName(), cfg.AttemptTimeout),
		idemGet: newLeaderGets(nc, "KV_"+cfg.IdempotencyBucket(), cfg.AttemptTimeout)}, js, nil
}

// Open binds to the streams, creating or updating them as needed.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	if cfg.IdempotencyTTL == 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	s, js, err := newStore(nc, cfg)
	if err != nil {
		return nil, err
	}
	cfg = s.cfg
	s.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "MCP Vault events (see events/doc.go)",
		Subjects:    []string{"vault.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.Duplicates,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
		MaxMsgSize:  4 << 20,
		// Group commit publishes concurrent appends as one atomic batch.
		AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore: stream %s: %w", cfg.Stream, err)
	}
	// Wrapped data keys live outside the immutable event stream, in a stream
	// that allows deletes, so that SecureDeleteMsg can overwrite them.
	s.keys, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:               cfg.KeysStreamName(),
		Description:        "MCP Vault wrapped data keys, one per credential; destroyed with SecureDeleteMsg",
		Subjects:           []string{"vaultkeys." + strings.ToLower(cfg.Stream) + ".>"},
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		Replicas:           cfg.Replicas,
		Duplicates:         cfg.Duplicates,
		MaxMsgsPerSubject:  -1, // versions: a re-wrap stores the new one, then SecureDeleteMsg destroys the old (eventstore/custody.go)
		AllowDirect:        true,
		AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore: stream %s: %w", cfg.KeysStreamName(), err)
	}
	s.idem, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.IdempotencyBucket(),
		Description: "MCP Vault idempotent answers (no secrets)",
		TTL:         cfg.IdempotencyTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore: bucket %s: %w", cfg.IdempotencyBucket(), err)
	}
	s.stop = make(chan struct{})
	s.usesBatch = s.startCommitter()
	if cfg.GroupCommit {
		s.startCommitters()
	}
	return s, nil
}

// Config returns the store's configuration.
func (s *Store) Config() Config { return s.cfg }

func (s *Store) observePublish(d time.Duration) {
	if s.cfg.PublishLatency != nil {
		s.cfg.PublishLatency(d)
	}
}

// LastSeq is the sequence of the newest event in the stream.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return info.State.LastSeq, nil
}

// OpenWhenReady retries Open until it succeeds or ctx ends, calling onRetry
// after each failure.
func OpenWhenReady(ctx context.Context, nc *nats.Conn, cfg Config, onRetry func(error)) (*Store, error) {
	return retryUntil(ctx, Open, nc, cfg, onRetry, 2*time.Second)
}
