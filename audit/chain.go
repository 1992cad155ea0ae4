package audit

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mcpvault/vault/events"
)

// Break is a stored event that does not verify.
type Break struct {
	Seq     uint64
	Subject string
	Err     error
}

// Error implements error.
func (b *Break) Error() string {
	return fmt.Sprintf("sequence %d on %s: %v", b.Seq, b.Subject, b.Err)
}

// Unwrap returns the reason.
func (b *Break) Unwrap() error { return b.Err }

// Chained reports whether an event of type typ must carry a chain link:
// every state-changing event. Uses, expiry notices, rotation records and
// rejections are signed only (their subjects are not aggregate histories).
func Chained(typ string) bool {
	switch typ {
	case events.TypeCredentialUsed, events.TypeAuditRejected, events.TypeKeysRewrapped,
		events.TypeCredentialExpiringSoon, events.TypeCredentialExpired:
		return false
	}
	return true
}

// Checker verifies a stream read in order. It keeps, per subject, the hash of
// the last message stored on it (the physical predecessor, whatever its
// validity: the writer links to what it loaded), and the ids of the events
// seen, so that a replayed copy of an unchained event is caught too.
type Checker struct {
	// Keys verifies signatures (public keys are enough).
	Keys *Keyring
	// UnsignedUntil accepts unsigned events up to and including this
	// sequence: a stream written before signing existed. Signed events are
	// always verified.
	UnsignedUntil uint64

	heads map[string]string
	ids   map[string]uint64
}

// Check verifies the message stored at seq on subject with headers h. It
// returns a *Break when the event does not verify. Every message, valid or
// not, becomes the predecessor of the next one on its subject.
func (c *Checker) Check(seq uint64, subject string, body []byte, h Header) error {
	if c.heads == nil {
		c.heads, c.ids = map[string]string{}, map[string]uint64{}
	}
	prev := c.heads[subject]
	c.heads[subject] = Head(seq, body)
	if seq <= c.UnsignedUntil && h.Get(HeaderSig) == "" {
		return nil
	}
	if err := c.Keys.VerifyNext(seq, subject, body, h, prev); err != nil {
		return err
	}
	var env struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &env) == nil && env.ID != "" {
		if first, dup := c.ids[env.ID]; dup {
			return &Break{Seq: seq, Subject: subject, Err: fmt.Errorf("%w: first at sequence %d", ErrReplayed, first)}
		}
		c.ids[env.ID] = seq
	}
	return nil
}

// Head is the chain value a message leaves on its subject: what the next
// state-changing event there must link to. A consumer that verifies as it
// applies (the projector) keeps it per subject with its position.
func Head(seq uint64, body []byte) string { return linkValue(seq, body) }

// VerifyNext checks one message given prevHead, the Head of the message
// before it on its subject ("" when there is none): its signature and, for
// a state-changing event, its chain link. It returns a *Break.
func (k *Keyring) VerifyNext(seq uint64, subject string, body []byte, h Header, prevHead string) error {
	fail := func(err error) error { return &Break{Seq: seq, Subject: subject, Err: err} }
	chain, err := k.VerifySignature(subject, body, h)
	if err != nil {
		return fail(err)
	}
	var env struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &env) // a signed body is the vault's own envelope
	if !Chained(env.Type) {
		return nil
	}
	want := First
	if prevHead != "" {
		want = prevHead
	}
	switch {
	case chain == "":
		return fail(ErrUnchained)
	case chain != want:
		return fail(ErrChain)
	}
	return nil
}

// IsBreak reports whether err is a verification break.
func IsBreak(err error) bool {
	var b *Break
	return errors.As(err, &b)
}
