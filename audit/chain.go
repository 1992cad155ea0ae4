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
	prev, seen := c.heads[subject]
	c.heads[subject] = linkValue(seq, body)
	fail := func(err error) error { return &Break{Seq: seq, Subject: subject, Err: err} }
	var env struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &env) // a body that is not an envelope fails the signature or the legacy check below
	if seq <= c.UnsignedUntil && h.Get(HeaderSig) == "" {
		return nil
	}
	chain, err := c.Keys.VerifySignature(subject, body, h)
	if err != nil {
		return fail(err)
	}
	if Chained(env.Type) {
		want := First
		if seen {
			want = prev
		}
		switch {
		case chain == "":
			return fail(ErrUnchained)
		case chain != want:
			return fail(ErrChain)
		}
	}
	if env.ID != "" {
		if first, dup := c.ids[env.ID]; dup {
			return fail(fmt.Errorf("%w: first at sequence %d", ErrReplayed, first))
		}
		c.ids[env.ID] = seq
	}
	return nil
}

// IsBreak reports whether err is a verification break.
func IsBreak(err error) bool {
	var b *Break
	return errors.As(err, &b)
}
