package audit

import (
	"crypto/ed25519"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Signed is one stored message whose signature VerifyAll checks.
type Signed struct {
	Subject string
	Body    []byte
	Header  Header
}

// minBatch is the smallest number of signatures VerifyAll checks in one
// batch; fewer are checked one by one.
const minBatch = 8

// VerifyAll checks the signatures of msgs as VerifySignature checks one and
// returns an error per message, nil where it verifies.
//
// The signatures are checked together in one Ed25519 batch verification
// (github.com/oasisprotocol/curve25519-voi): 21–25 µs per signature in
// batches of 64–1,024 on the bench machine, against 66 µs one by one with
// crypto/ed25519. A batch that does not verify is checked one by one to
// tell which message failed. The batch equation is the cofactored one of
// RFC 8032 and FIPS 186-5; crypto/ed25519 checks the cofactorless one. The
// two differ only on signatures built with the private key to differ (small
// order components), so for a verifier that holds no signing key they
// accept the same events: one signed by this keyring verifies either way,
// and a forgery by anyone without the key fails either way.
func (k *Keyring) VerifyAll(msgs []Signed) []error {
	errs := make([]error, len(msgs))
	type entry struct {
		i   int
		kid string
		msg []byte
		sig []byte
	}
	entries := make([]entry, 0, len(msgs))
	for i, m := range msgs {
		kid, sig, err := k.signature(m.Header)
		switch {
		case err != nil:
			errs[i] = err
		case k.expanded[kid] == nil:
			errs[i] = ErrSignature // not a point: nothing verifies
		default:
			entries = append(entries, entry{i, kid, message(m.Subject, m.Header.Get(HeaderChain), m.Body), sig})
		}
	}
	if len(entries) < minBatch {
		for _, e := range entries {
			if !ed25519.Verify(k.pub[e.kid], e.msg, e.sig) {
				errs[e.i] = ErrSignature
			}
		}
		return errs
	}
	bv := voi.NewBatchVerifierWithCapacity(len(entries))
	for _, e := range entries {
		bv.AddExpanded(k.expanded[e.kid], e.msg, e.sig)
	}
	if all, valid := bv.Verify(nil); !all {
		for j, e := range entries {
			if !valid[j] {
				errs[e.i] = ErrSignature
			}
		}
	}
	return errs
}

// expand precomputes each public key's tables for batches (nil for a value
// that is not a point: nothing verifies against it).
func (k *Keyring) expand() {
	k.expanded = make(map[string]*voi.ExpandedPublicKey, len(k.pub))
	for kid, pub := range k.pub {
		x, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
		if err != nil {
			x = nil
		}
		k.expanded[kid] = x
	}
}
