// Package eventstore owns the vault's use of NATS JetStream: the connection,
// the event stream, the stream of wrapped data keys, the idempotency bucket
// and the projector's consumer. No other package imports nats.go.
package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors the callers map to answers.
var (
	// ErrConflict: the expected last sequence did not match (a concurrent write won).
	ErrConflict = errors.New("eventstore: concurrent write")
	// ErrUnavailable: the stream could not take or serve the request.
	ErrUnavailable = errors.New("eventstore: stream unavailable")
	// ErrDuplicate: the message id was already stored (within the
	// deduplication window) by an earlier attempt.
	ErrDuplicate = errors.New("eventstore: duplicate message id")
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
}

// Store is a connected JetStream client with the vault's streams.
type Store struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	cfg    Config
	events jetstream.Stream
	keys   jetstream.Stream
	idem   jetstream.KeyValue
	queue  chan *appendReq // group commit, when enabled
	stats  struct{ batches, batched, fallbacks atomic.Uint64 }
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

// Open binds to the streams, creating or updating them as needed.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	if cfg.Stream == "" {
		cfg.Stream = "VAULT"
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	if cfg.IdempotencyTTL == 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &Store{NC: nc, JS: js, cfg: cfg}
	s.events, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
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
		Name:              cfg.KeysStreamName(),
		Description:       "MCP Vault wrapped data keys, one per credential; destroyed with SecureDeleteMsg",
		Subjects:          []string{"vaultkeys." + strings.ToLower(cfg.Stream) + ".>"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Replicas:          cfg.Replicas,
		Duplicates:        cfg.Duplicates,
		MaxMsgsPerSubject: 1,
		AllowDirect:       true,
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
	return s, nil
}

// Config returns the store's configuration.
func (s *Store) Config() Config { return s.cfg }

// Append publishes one event. expectSeq is the last sequence the writer saw
// on the subject filter expect (0 = none yet); msgID deduplicates retries.
func (s *Store) Append(ctx context.Context, subject string, data []byte, msgID, expect string, expectSeq uint64) (uint64, error) {
	if s.queue != nil {
		seq, dup, err := s.publishGrouped(ctx, subject, data, msgID, expect, expectSeq)
		switch {
		case err != nil:
			return 0, classify(err)
		case dup:
			return seq, ErrDuplicate
		}
		return seq, nil
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(msgID)}
	if expect != "" {
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(expectSeq, expect))
	}
	ack, err := s.JS.Publish(ctx, subject, data, opts...)
	if err != nil {
		return 0, classify(err)
	}
	if ack.Duplicate {
		return ack.Sequence, ErrDuplicate
	}
	return ack.Sequence, nil
}

// AppendUnchecked publishes an event that needs no concurrency check (a
// record of use): it never conflicts with other writes.
func (s *Store) AppendUnchecked(ctx context.Context, subject string, data []byte, msgID string) (uint64, error) {
	return s.Append(ctx, subject, data, msgID, "", 0)
}

func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// LastSeq is the sequence of the newest event in the stream.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.events.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return info.State.LastSeq, nil
}

// PutKey stores a credential's wrapped data key.
func (s *Store) PutKey(ctx context.Context, credentialID string, wrapped []byte) error {
	_, err := s.JS.Publish(ctx, s.cfg.keySubject(credentialID), wrapped, jetstream.WithMsgID("dek-"+credentialID))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// GetKey returns a credential's wrapped data key.
func (s *Store) GetKey(ctx context.Context, credentialID string) ([]byte, error) {
	m, err := s.keys.GetLastMsgForSubject(ctx, s.cfg.keySubject(credentialID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return m.Data, nil
}

// DestroyKey overwrites and removes a credential's wrapped data key
// (SecureDeleteMsg: plain deletes and purges leave the bytes on disk). It is
// idempotent: a key already gone is not an error.
func (s *Store) DestroyKey(ctx context.Context, credentialID string) error {
	for {
		m, err := s.keys.GetLastMsgForSubject(ctx, s.cfg.keySubject(credentialID))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if err := s.keys.SecureDeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			// The API and the projector both destroy a key; the second
			// SecureDeleteMsg fails with a server error ("no message found",
			// "sequence not found") rather than ErrMsgNotFound. Look again:
			// gone is success, a newer message is destroyed next round.
			again, gerr := s.keys.GetLastMsgForSubject(ctx, s.cfg.keySubject(credentialID))
			if errors.Is(gerr, jetstream.ErrMsgNotFound) || (gerr == nil && again.Sequence != m.Sequence) {
				continue
			}
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
}

// OpenWhenReady retries Open until it succeeds or ctx ends, calling onRetry
// after each failure.
func OpenWhenReady(ctx context.Context, nc *nats.Conn, cfg Config, onRetry func(error)) (*Store, error) {
	wait := 100 * time.Millisecond
	for {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := Open(octx, nc, cfg)
		cancel()
		if err == nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		onRetry(err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}
