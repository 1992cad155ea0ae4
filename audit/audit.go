// Package audit makes the event stream tamper-evident. Every event the vault
// appends is signed with Ed25519 by the audit keyring (VAULT_AUDIT_KEYS,
// independent of the master keys), and every state-changing event carries a
// chain link: the SHA-256 of the message stored just before it on the same
// subject (its aggregate). Use events (mcp.credential.used) are signed but
// not chained, so concurrent uses never conflict; there is no stream-wide
// chain, which would serialise every write.
//
// The signature and the link travel in NATS message headers, so the JSON
// envelope stays exactly what audit consumers read:
//
//	Vault-Audit-Kid:   key id of the signing key
//	Vault-Audit-Sig:   base64 Ed25519 signature
//	Vault-Audit-Chain: hex SHA-256 of the stream sequence and body of the previous
//	                   message on the subject, "-" for the first event of an
//	                   aggregate; absent when unchained
//
// The signature covers a domain-separation tag, the subject, the chain header
// and the body, so an event cannot be moved to another subject, re-linked or
// altered. A replayed copy of an old event keeps a valid signature but its
// link no longer names the message before it, and a reordered copy likewise.
// Auditors verify with the public keys alone (VAULT_AUDIT_PUBLIC_KEYS, printed
// by `vaultctl audit keys`); rotating the keyring (prepending a key) never
// invalidates old signatures as long as the old public key stays listed.
package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Header names carried by every signed message.
const (
	HeaderKID   = "Vault-Audit-Kid"
	HeaderSig   = "Vault-Audit-Sig"
	HeaderChain = "Vault-Audit-Chain"
)

// First is the chain value of the first event of an aggregate.
const First = "-"

const tag = "mcp-vault/audit/v1"

// Keyring holds the audit keys: the first signs, all verify. A keyring
// parsed from public keys only verifies.
type Keyring struct {
	active string
	priv   ed25519.PrivateKey
	pub    map[string]ed25519.PublicKey
	// expanded holds the public keys precomputed for VerifyAll's batches.
	expanded map[string]*voi.ExpandedPublicKey
}

// ParseKeyring parses VAULT_AUDIT_KEYS: "kid:base64(32-byte seed),…".
// Errors never include key material.
func ParseKeyring(spec string) (*Keyring, error) {
	return parse(spec, true, "VAULT_AUDIT_KEYS")
}

// ParsePublicKeys parses VAULT_AUDIT_PUBLIC_KEYS: "kid:base64(32-byte
// public key),…", for auditors who must not hold signing keys.
func ParsePublicKeys(spec string) (*Keyring, error) {
	return parse(spec, false, "VAULT_AUDIT_PUBLIC_KEYS")
}

func parse(spec string, private bool, what string) (*Keyring, error) {
	kr := &Keyring{pub: map[string]ed25519.PublicKey{}}
	for i, part := range strings.Split(spec, ",") {
		kid, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || !validKID(kid) {
			return nil, fmt.Errorf("%s: key %d: want kid:base64 with a kid of 1 to 32 letters, digits, '.', '_' or '-'", what, i+1)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) != 32 { // ed25519.SeedSize == ed25519.PublicKeySize
			return nil, fmt.Errorf("%s: key %q: want base64 of 32 bytes", what, kid)
		}
		if _, dup := kr.pub[kid]; dup {
			return nil, fmt.Errorf("%s: key id %q given twice", what, kid)
		}
		if private {
			priv := ed25519.NewKeyFromSeed(raw)
			kr.pub[kid] = priv.Public().(ed25519.PublicKey)
			if i == 0 {
				kr.active, kr.priv = kid, priv
			}
		} else {
			kr.pub[kid] = ed25519.PublicKey(raw)
		}
	}
	kr.expand()
	return kr, nil
}

func validKID(kid string) bool {
	if kid == "" || len(kid) > 32 {
		return false
	}
	for _, c := range []byte(kid) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// NewKeySpec returns a keyring spec with one fresh random signing key.
func NewKeySpec(kid string) string {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		panic(err)
	}
	return kid + ":" + base64.StdEncoding.EncodeToString(seed)
}

// ActiveKID is the id of the signing key ("" for a verify-only keyring).
func (k *Keyring) ActiveKID() string { return k.active }

// CanSign reports whether the keyring holds a signing key.
func (k *Keyring) CanSign() bool { return k.priv != nil }

// PublicSpec renders the public keys in VAULT_AUDIT_PUBLIC_KEYS form, the
// signing key first.
func (k *Keyring) PublicSpec() string {
	kids := make([]string, 0, len(k.pub))
	for kid := range k.pub {
		if kid != k.active {
			kids = append(kids, kid)
		}
	}
	sort.Strings(kids)
	if k.active != "" {
		kids = append([]string{k.active}, kids...)
	}
	parts := make([]string, len(kids))
	for i, kid := range kids {
		parts[i] = kid + ":" + base64.StdEncoding.EncodeToString(k.pub[kid])
	}
	return strings.Join(parts, ",")
}

// Link is the chain value an event is signed with: Unchained, First, or
// After(previous body).
type Link struct{ v string }

// Unchained is the link of events outside any chain (uses, rejections).
var Unchained = Link{}

// FirstLink is the link of the first event of an aggregate.
var FirstLink = Link{First}

// After links an event to the message stored before it on its subject:
// that message's stream sequence (the writer's expected last sequence) and
// body. Binding the sequence makes a replayed copy of a message a different
// predecessor from the original, so the copy of the next event breaks too.
// prevSeq 0 (no message on the subject yet) gives FirstLink.
func After(prevSeq uint64, prevBody []byte) Link {
	if prevSeq == 0 {
		return FirstLink
	}
	return Link{linkValue(prevSeq, prevBody)}
}

func linkValue(seq uint64, body []byte) string {
	h := sha256.New()
	h.Write([]byte(strconv.FormatUint(seq, 10)))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Hash is the hex SHA-256 of a message body (rejections name the rejected
// message by it).
func Hash(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

// String is the header value ("" when unchained).
func (l Link) String() string { return l.v }

func message(subject, chain string, body []byte) []byte {
	m := make([]byte, 0, len(tag)+len(subject)+len(chain)+len(body)+3)
	m = append(m, tag...)
	m = append(m, 0)
	m = append(m, subject...)
	m = append(m, 0)
	m = append(m, chain...)
	m = append(m, 0)
	return append(m, body...)
}

// Sign signs body as published on subject with link, returning the headers
// to publish it with. It is what the append path calls; it panics when the
// keyring cannot sign (a verify-only keyring in a writer is a wiring bug).
func (k *Keyring) Sign(subject string, body []byte, link Link) map[string]string {
	if k.priv == nil {
		panic("audit: Sign with a verify-only keyring")
	}
	sig := ed25519.Sign(k.priv, message(subject, link.v, body))
	h := map[string]string{HeaderKID: k.active, HeaderSig: base64.StdEncoding.EncodeToString(sig)}
	if link.v != "" {
		h[HeaderChain] = link.v
	}
	return h
}

// Errors of verification; a *Break wraps one of them.
var (
	ErrUnsigned   = errors.New("not signed")
	ErrUnknownKey = errors.New("signed with an unknown key")
	ErrSignature  = errors.New("signature does not verify")
	ErrChain      = errors.New("chain link does not name the previous event of its aggregate")
	ErrUnchained  = errors.New("state-changing event without a chain link")
	ErrReplayed   = errors.New("event id seen before (a replayed copy)")
)

// Header reads one header value; nats.Header and http.Header fit it.
type Header interface{ Get(string) string }

// MapHeader adapts a plain map to Header.
type MapHeader map[string]string

// Get implements Header.
func (m MapHeader) Get(k string) string { return m[k] }

// VerifySignature checks the signature of body as stored on subject and
// returns the chain value it was signed with ("" when unchained).
func (k *Keyring) VerifySignature(subject string, body []byte, h Header) (string, error) {
	kid, sig, err := k.signature(h)
	if err != nil {
		return "", err
	}
	chain := h.Get(HeaderChain)
	if !ed25519.Verify(k.pub[kid], message(subject, chain, body), sig) {
		return "", ErrSignature
	}
	return chain, nil
}

// signature reads the key id and signature of h, a key of this keyring's
// (VerifySignature and VerifyAll check the same things in the same order).
func (k *Keyring) signature(h Header) (kid string, sig []byte, err error) {
	kid, sig64 := h.Get(HeaderKID), h.Get(HeaderSig)
	if kid == "" || sig64 == "" {
		return "", nil, ErrUnsigned
	}
	if _, ok := k.pub[kid]; !ok {
		return "", nil, ErrUnknownKey
	}
	sig, err = base64.StdEncoding.DecodeString(sig64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return "", nil, ErrSignature
	}
	return kid, sig, nil
}
