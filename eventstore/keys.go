package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// PutKey stores a credential's wrapped data key. Like Append it resolves a
// lost acknowledgement by publishing again with the same message id (the
// keys stream keeps one message per subject, so the retry is harmless); it
// returns ErrUnknownOutcome when ctx ends first.
//
// A duplicate acknowledgement is checked: JetStream remembers a message id
// for its deduplication window even after the message was destroyed, so a
// key stored, destroyed (a create that certainly failed) and stored again by
// a retry of the same write within the window would be acknowledged as a
// duplicate without being stored — and the event appended next would be a
// credential without its key. Such a key is published again under a new id.
func (s *Store) PutKey(ctx context.Context, credentialID string, wrapped []byte) error {
	m := nats.NewMsg(s.cfg.keySubject(credentialID))
	m.Data = wrapped
	m.Header.Set(jetstream.MsgIDHeader, "dek-"+credentialID)
	sent := false
	if s.keysBatch != nil {
		res := s.keysBatch.submit(ctx, m)
		if res.ack != nil && !res.ack.Duplicate {
			return nil
		}
		sent = res.uncertain || res.ack != nil
	}
	wait := 25 * time.Millisecond
	for retake := 0; ; {
		ack, err := s.publishOnce(ctx, m)
		if err == nil && ack.Duplicate && retake < 3 {
			if _, gerr := s.GetKey(ctx, credentialID); errors.Is(gerr, ErrKeyNotFound) {
				retake++
				m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("dek-%s-%d", credentialID, time.Now().UnixNano()))
				continue
			} else if gerr != nil {
				err = gerr
			}
		}
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

// NewKey is one wrapped data key for PutKeys.
type NewKey struct {
	CredentialID string
	Wrapped      []byte
}

// PutKeys stores several wrapped data keys at once: asynchronous publishes
// acknowledged together, so the lot costs about one round trip. It returns,
// per key, its sequence in the keys stream (for DestroyKeyVersion) and nil when
// the key is certainly stored, or an error (not stored, or outcome unknown:
// the caller must not rely on the key and must not hand its credential id
// out). It does not retry: its callers (the data-key pool, app/keypool.go)
// simply store other keys next time.
func (s *Store) PutKeys(ctx context.Context, keys []NewKey) ([]uint64, []error) {
	seqs := make([]uint64, len(keys))
	errs := make([]error, len(keys))
	futures := make([]jetstream.PubAckFuture, len(keys))
	for i, k := range keys {
		m := nats.NewMsg(s.cfg.keySubject(k.CredentialID))
		m.Data = k.Wrapped
		m.Header.Set(jetstream.MsgIDHeader, "dek-"+k.CredentialID)
		f, err := s.JS.PublishMsgAsync(m)
		if err != nil {
			errs[i] = fmt.Errorf("%w: %v", ErrUnavailable, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			seqs[i] = ack.Sequence
			if ack.Duplicate { // a fresh id is never a duplicate; do not trust it
				errs[i] = fmt.Errorf("%w: duplicate key id", ErrUnknownOutcome)
			}
		case err := <-f.Err():
			errs[i] = fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
		}
	}
	return seqs, errs
}

// PutKeysAtomic stores several wrapped data keys as one JetStream atomic
// batch: under sync_interval always the server writes the lot with one
// fsync, instead of one per key. Its outcome is the same for every key:
// all stored (nil errors), or not known to be stored (every error set).
func (s *Store) PutKeysAtomic(ctx context.Context, keys []NewKey) ([]uint64, []error) {
	seqs := make([]uint64, len(keys))
	errs := make([]error, len(keys))
	msgs := make([]*nats.Msg, len(keys))
	for i, k := range keys {
		m := nats.NewMsg(s.cfg.keySubject(k.CredentialID))
		m.Data = k.Wrapped
		m.Header.Set(jetstream.MsgIDHeader, "dek-"+k.CredentialID)
		msgs[i] = m
	}
	actx, cancel := context.WithTimeout(ctx, s.batchTimeout())
	defer cancel()
	ack, err := jetstreamext.PublishMsgBatch(actx, s.JS, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
	if err == nil && ack.BatchSize != uint64(len(msgs)) {
		err = fmt.Errorf("batch of %d committed %d", len(msgs), ack.BatchSize)
	}
	for i := range errs {
		if err != nil {
			errs[i] = fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		} else {
			seqs[i] = ack.Sequence - uint64(len(keys)-1-i)
		}
	}
	return seqs, errs
}
