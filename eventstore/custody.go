package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Owner keys live in the keys stream beside the data keys, one subject per
// owner: vaultkeys.<stream>.owner.<owner key id>. Like data keys, they are
// destroyed with SecureDeleteMsg.

func (c Config) ownerKeySubject(ownerKeyID string) string {
	return "vaultkeys." + strings.ToLower(c.Stream) + ".owner." + ownerKeyID
}

// GetOwnerKey returns an owner key record (as the keys stream's leader has
// it), or ErrKeyNotFound.
func (s *Store) GetOwnerKey(ctx context.Context, ownerKeyID string) ([]byte, error) {
	m, err := s.keyGet.last(ctx, s.cfg.ownerKeySubject(ownerKeyID))
	if errors.Is(err, ErrNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

// PutOwnerKeyIfAbsent stores an owner key record unless the owner already
// has one, and returns the record that is stored: two processes creating the
// first credential of an owner at once agree on one key.
func (s *Store) PutOwnerKeyIfAbsent(ctx context.Context, ownerKeyID string, record []byte) ([]byte, error) {
	subject := s.cfg.ownerKeySubject(ownerKeyID)
	for attempt := 0; attempt < 3; attempt++ {
		err := s.publishKey(ctx, subject, record, 0)
		if err == nil {
			return record, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
		stored, err := s.GetOwnerKey(ctx, ownerKeyID)
		if err == nil {
			return stored, nil
		}
		if !errors.Is(err, ErrKeyNotFound) {
			return nil, err
		}
		// destroyed in between (an erase): try again
	}
	return nil, fmt.Errorf("%w: owner key %s keeps changing", ErrConflict, ownerKeyID)
}

// DestroyOwnerKey overwrites and removes an owner key (every version of it).
// It is idempotent.
func (s *Store) DestroyOwnerKey(ctx context.Context, ownerKeyID string) error {
	return s.destroySubject(ctx, s.cfg.ownerKeySubject(ownerKeyID))
}

func (s *Store) destroySubject(ctx context.Context, subject string) error {
	for {
		m, err := s.keyGet.last(ctx, subject)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.keys.SecureDeleteMsg(ctx, m.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			again, gerr := s.keyGet.last(ctx, subject)
			if errors.Is(gerr, ErrNotFound) || (gerr == nil && again.Seq != m.Seq) {
				continue
			}
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
}

// KeyVersion is one message of the keys stream.
type KeyVersion struct {
	Seq     uint64
	Subject string
	// Kind is "owner" or "dek"; ID the owner key id or the credential id.
	Kind, ID string
	Data     []byte
	// Current is false for an older version of a key that a re-wrap
	// replaced but could not destroy yet (the re-wrap was interrupted).
	Current bool
}

// KeyCount is the number of messages in the keys stream.
func (s *Store) KeyCount(ctx context.Context) (uint64, error) {
	info, err := s.keys.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return info.State.Msgs, nil
}

// ForEachKey walks every message of the keys stream stored when it starts.
func (s *Store) ForEachKey(ctx context.Context, fn func(KeyVersion) error) error {
	info, err := s.keys.Info(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	last := info.State.LastSeq
	cons, err := s.JS.OrderedConsumer(ctx, s.cfg.KeysStreamName(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer it.Stop()
	prefix := "vaultkeys." + strings.ToLower(s.cfg.Stream) + "."
	return eachMsg(ctx, it, func(m Msg) (bool, error) {
		k := KeyVersion{Seq: m.Seq, Subject: m.Subject, Data: m.Data}
		k.Kind, k.ID, _ = strings.Cut(strings.TrimPrefix(k.Subject, prefix), ".")
		cur, err := s.keyGet.last(ctx, k.Subject)
		k.Current = err == nil && cur.Seq == k.Seq
		if err := fn(k); err != nil {
			return true, err
		}
		return m.Pending == 0 || k.Seq >= last, nil
	})
}

// ReplaceKey stores a new version of the key at old (a re-wrap) if old is
// still the key's current version, then destroys old with SecureDeleteMsg.
// It returns ErrConflict when the key changed or was destroyed meanwhile.
func (s *Store) ReplaceKey(ctx context.Context, old KeyVersion, data []byte) error {
	if err := s.publishKey(ctx, old.Subject, data, old.Seq); err != nil {
		return err
	}
	return s.DestroyKeyVersion(ctx, old.Seq)
}

// DestroyKeyVersion overwrites and removes one message of the keys stream
// (an old version of a re-wrapped key). Already gone is not an error.
func (s *Store) DestroyKeyVersion(ctx context.Context, seq uint64) error {
	return s.removeKeyVersion(ctx, seq, s.keys.SecureDeleteMsg)
}

// removeKeyVersion removes the keys stream's message at seq with del; a
// message already gone is not an error.
func (s *Store) removeKeyVersion(ctx context.Context, seq uint64, del func(context.Context, uint64) error) error {
	err := del(ctx, seq)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if _, gerr := s.keys.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// DiscardKeyVersion removes a wrapped key that never sealed anything (a
// data key stored ahead and never handed to a create) with a plain delete:
// its bytes protect no secret, so overwriting them on disk, which makes
// SecureDeleteMsg costly, buys nothing. Keys that sealed a secret are
// destroyed with DestroyKeyVersion.
func (s *Store) DiscardKeyVersion(ctx context.Context, seq uint64) error {
	return s.removeKeyVersion(ctx, seq, s.keys.DeleteMsg)
}

// CurrentKey returns the current version of the key on subject; ok is false
// when the key is gone (destroyed).
func (s *Store) CurrentKey(ctx context.Context, subject string) (KeyVersion, bool, error) {
	m, err := s.keyGet.last(ctx, subject)
	if errors.Is(err, ErrNotFound) {
		return KeyVersion{}, false, nil
	}
	if err != nil {
		return KeyVersion{}, false, err
	}
	k := KeyVersion{Seq: m.Seq, Subject: m.Subject, Data: m.Data, Current: true}
	k.Kind, k.ID, _ = strings.Cut(strings.TrimPrefix(k.Subject, "vaultkeys."+strings.ToLower(s.cfg.Stream)+"."), ".")
	return k, true, nil
}

// publishKey stores a message on a keys-stream subject if the subject's last
// sequence is expectSeq (0: empty). It never goes through group commit, nor
// needs a message id: a publish whose acknowledgement was lost and that is
// tried again fails its expectation, and the callers then read what is
// stored (their own message).
func (s *Store) publishKey(ctx context.Context, subject string, data []byte, expectSeq uint64) error {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expectSeq, 10))
	_, err := s.publishOnce(ctx, m)
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
		return fmt.Errorf("%w: %v", ErrConflict, err)
	default:
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
}
