// Package seal is the vault's envelope encryption. Every credential secret is
// encrypted with AES-256-GCM under its own random data key (DEK); the data key
// is wrapped with AES-256-GCM by the active master key (KEK) of the keyring,
// whose key id is recorded with the wrapped key. Both ciphertexts carry
// associated data that binds them to the credential, its server and its owner,
// so a ciphertext or wrapped key moved to another record fails to open.
//
// Key hierarchy: master key (kid) → data key (one per credential) → secret.
// WrappedKey.KID names the key that wrapped a data key, so a level can be
// inserted later (for instance a per-end-user key "owner:<hash>" wrapped by
// the master key, whose destruction erases everything of that user) without
// changing stored events.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/mcpvault/vault/events"
)

// Alg is the algorithm name recorded with sealed secrets.
const Alg = "AES-256-GCM"

// KeySize is the size of master and data keys in bytes.
const KeySize = 32

// ErrDecrypt is returned when a ciphertext does not open: wrong key, wrong
// record, or tampered data. It never says which.
var ErrDecrypt = errors.New("seal: ciphertext does not open")

// Keyring holds the master keys. The first key encrypts; all decrypt.
type Keyring struct {
	active  string
	aeads   map[string]cipher.AEAD
	macKeys map[string][]byte // derived from each key, for Fingerprint
}

// ParseKeyring parses "kid:base64(32 bytes),…". Errors never include key material.
func ParseKeyring(spec string) (*Keyring, error) {
	kr := &Keyring{aeads: map[string]cipher.AEAD{}, macKeys: map[string][]byte{}}
	for i, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		kid, b64, ok := strings.Cut(part, ":")
		// A kid is a short name ([A-Za-z0-9._-]{1,32}); a kid that is not
		// could be key material (a spec written "base64:kid"), so it is
		// never echoed in an error and never recorded with wrapped keys.
		if !ok || !validKID(kid) {
			return nil, fmt.Errorf("seal: master key %d: want kid:base64 with a kid of 1 to 32 letters, digits, '.', '_' or '-'", i+1)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(key) != KeySize {
			return nil, fmt.Errorf("seal: master key %q: want base64 of %d bytes", kid, KeySize)
		}
		if _, dup := kr.aeads[kid]; dup {
			return nil, fmt.Errorf("seal: master key id %q given twice", kid)
		}
		if kr.aeads[kid], err = newGCM(key); err != nil {
			return nil, err
		}
		if i == 0 {
			kr.active = kid
		}
		m := hmac.New(sha256.New, key)
		m.Write([]byte("mcp-vault/v1 fingerprint key"))
		kr.macKeys[kid] = m.Sum(nil)
	}
	return kr, nil
}

// Fingerprint is a keyed hash (HMAC-SHA256 under a key derived from the
// active master key) of parts, each length-prefixed. It lets the vault
// compare requests that contain secrets without storing anything from which
// a low-entropy secret could be guessed offline.
func (k *Keyring) Fingerprint(parts ...[]byte) []byte {
	sum, _ := k.FingerprintWith(k.active, parts...)
	return sum
}

// FingerprintWith is Fingerprint under the key kid, so that a fingerprint
// taken before a rotation is compared under the key it was taken with. It
// reports false when the keyring no longer holds kid.
func (k *Keyring) FingerprintWith(kid string, parts ...[]byte) ([]byte, bool) {
	key, ok := k.macKeys[kid]
	if !ok {
		return nil, false
	}
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(p))))
		m.Write(p)
	}
	return m.Sum(nil), true
}

func validKID(kid string) bool {
	if kid == "" || len(kid) > 32 {
		return false
	}
	for i := 0; i < len(kid); i++ {
		c := kid[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ActiveKID is the id of the key that wraps new data keys.
func (k *Keyring) ActiveKID() string { return k.active }

// NewKeySpec returns a keyring spec with one fresh random key.
func NewKeySpec(kid string) string {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		panic(err)
	}
	return kid + ":" + base64.StdEncoding.EncodeToString(key)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Binding is what a ciphertext is bound to.
type Binding struct {
	CredentialID string
	ServerID     string
	Owner        events.Owner
}

// ad builds unambiguous associated data: purpose and each field length-prefixed.
func (b Binding) ad(purpose string) []byte {
	var out []byte
	for _, s := range []string{"mcp-vault/v1", purpose, b.CredentialID, b.ServerID, b.Owner.Account, b.Owner.User} {
		out = binary.BigEndian.AppendUint32(out, uint32(len(s)))
		out = append(out, s...)
	}
	return out
}

// WrappedKey is a data key encrypted by a master key.
type WrappedKey struct {
	KID        string `json:"kid"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// NewDataKey creates a random data key for b and wraps it with the active key.
func (k *Keyring) NewDataKey(b Binding) ([]byte, WrappedKey, error) {
	dek := make([]byte, KeySize)
	if _, err := rand.Read(dek); err != nil {
		return nil, WrappedKey{}, err
	}
	aead := k.aeads[k.active]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, WrappedKey{}, err
	}
	return dek, WrappedKey{KID: k.active, Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, dek, b.ad("dek"))}, nil
}

// Unwrap opens a wrapped data key for b.
func (k *Keyring) Unwrap(b Binding, w WrappedKey) ([]byte, error) {
	aead, ok := k.aeads[w.KID]
	if !ok || len(w.Nonce) != aead.NonceSize() {
		return nil, ErrDecrypt
	}
	dek, err := aead.Open(nil, w.Nonce, w.Ciphertext, b.ad("dek"))
	if err != nil {
		return nil, ErrDecrypt
	}
	return dek, nil
}

// Seal encrypts plaintext under dek for b.
func Seal(dek []byte, b Binding, plaintext []byte) (*events.Sealed, error) {
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &events.Sealed{Alg: Alg, Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, plaintext, b.ad("secret"))}, nil
}

// Open decrypts s with dek for b.
func Open(dek []byte, b Binding, s *events.Sealed) ([]byte, error) {
	if s == nil || s.Alg != Alg {
		return nil, ErrDecrypt
	}
	aead, err := newGCM(dek)
	if err != nil || len(s.Nonce) != aead.NonceSize() {
		return nil, ErrDecrypt
	}
	pt, err := aead.Open(nil, s.Nonce, s.Ciphertext, b.ad("secret"))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// Wipe overwrites b with zeros (best effort: Go may have copied it).
func Wipe(b []byte) { clear(b) }
