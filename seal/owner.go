package seal

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"

	"github.com/mcpvault/vault/events"
)

// Owner keys: the middle level of the key hierarchy.
//
//	master key (VAULT_MASTER_KEYS, kid)        held by the operator, never stored
//	  └─ owner key (one per account and end user)   wrapped by a master key, stored in <STREAM>_KEYS
//	       └─ data key (one per credential)         wrapped by the owner key, stored in <STREAM>_KEYS
//	            └─ secret                            sealed by the data key, in the event stream
//
// Destroying one owner key makes every secret of that end user
// unrecoverable at once (erasure); rotating the master key re-wraps only the
// owner keys (and data keys written before owner keys existed), never the
// data keys under them.

// OwnerKIDPrefix starts the KID of a data key wrapped by an owner key:
// "owner:<owner key id>".
const OwnerKIDPrefix = "owner:"

// OwnerKeyID is the stable id of an owner's key: "mcp_owner_" and 32 hex
// characters of a hash of the owner. It is an id, not a secret, and the
// same for every process, so concurrent first writes converge.
func OwnerKeyID(o events.Owner) string {
	h := sha256.Sum256([]byte("mcp-vault/owner-key/v1\x00" + o.Key()))
	return "mcp_owner_" + hex.EncodeToString(h[:16])
}

// OwnerKeyRecord is how an owner key is stored: wrapped by a master key,
// with the owner it belongs to (ids only), which the wrapping binds.
type OwnerKeyRecord struct {
	Owner   events.Owner `json:"owner"`
	Wrapped WrappedKey   `json:"wrapped"`
}

func ownerBinding(o events.Owner) Binding {
	return Binding{CredentialID: OwnerKeyID(o), Owner: o}
}

// NewOwnerKey creates a random owner key for o and its record wrapped by
// the active master key.
func (k *Keyring) NewOwnerKey(o events.Owner) ([]byte, []byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, nil, err
	}
	w, err := k.wrap(ownerBinding(o).ad("owner-key"), key)
	if err != nil {
		return nil, nil, err
	}
	rec, err := json.Marshal(OwnerKeyRecord{Owner: o, Wrapped: w})
	return key, rec, err
}

// OpenOwnerKey unwraps a stored owner key record for o.
func (k *Keyring) OpenOwnerKey(o events.Owner, record []byte) ([]byte, error) {
	var r OwnerKeyRecord
	if err := json.Unmarshal(record, &r); err != nil || r.Owner != o {
		return nil, ErrDecrypt
	}
	return k.unwrap(ownerBinding(o).ad("owner-key"), r.Wrapped)
}

// RewrapOwnerKey re-wraps a stored owner key record under the active master
// key. changed is false when it already was (rotation is idempotent).
func (k *Keyring) RewrapOwnerKey(record []byte) (out []byte, changed bool, err error) {
	var r OwnerKeyRecord
	if err := json.Unmarshal(record, &r); err != nil {
		return nil, false, ErrDecrypt
	}
	if r.Wrapped.KID == k.active {
		return record, false, nil
	}
	ad := ownerBinding(r.Owner).ad("owner-key")
	key, err := k.unwrap(ad, r.Wrapped)
	if err != nil {
		return nil, false, err
	}
	defer Wipe(key)
	if r.Wrapped, err = k.wrap(ad, key); err != nil {
		return nil, false, err
	}
	out, err = json.Marshal(r)
	return out, true, err
}

// RewrapDataKey re-wraps a data key that a master key wraps directly (written
// before owner keys existed) under the active master key. Data keys under an
// owner key are left alone (changed false): rotating the master key re-wraps
// their owner key instead.
func (k *Keyring) RewrapDataKey(b Binding, w WrappedKey) (WrappedKey, bool, error) {
	if w.KID == k.active || strings.HasPrefix(w.KID, OwnerKIDPrefix) {
		return w, false, nil
	}
	dek, err := k.Unwrap(b, w)
	if err != nil {
		return w, false, err
	}
	defer Wipe(dek)
	nw, err := k.wrap(b.ad("dek"), dek)
	return nw, err == nil, err
}

// NewDataKeyUnder creates a random data key for b wrapped by an owner key.
func NewDataKeyUnder(ownerKey []byte, b Binding) ([]byte, WrappedKey, error) {
	dek := make([]byte, KeySize)
	if _, err := rand.Read(dek); err != nil {
		return nil, WrappedKey{}, err
	}
	aead, err := newGCM(ownerKey)
	if err != nil {
		return nil, WrappedKey{}, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, WrappedKey{}, err
	}
	return dek, WrappedKey{KID: OwnerKIDPrefix + OwnerKeyID(b.Owner), Nonce: nonce,
		Ciphertext: aead.Seal(nil, nonce, dek, b.ad("dek"))}, nil
}

// UnwrapUnder opens a data key wrapped by an owner key.
func UnwrapUnder(ownerKey []byte, b Binding, w WrappedKey) ([]byte, error) {
	if w.KID != OwnerKIDPrefix+OwnerKeyID(b.Owner) {
		return nil, ErrDecrypt
	}
	aead, err := newGCM(ownerKey)
	if err != nil || len(w.Nonce) != aead.NonceSize() {
		return nil, ErrDecrypt
	}
	dek, err := aead.Open(nil, w.Nonce, w.Ciphertext, b.ad("dek"))
	if err != nil {
		return nil, ErrDecrypt
	}
	return dek, nil
}

// ErrNeedsOwnerKey is returned by Unwrap for a data key wrapped by an owner
// key: the caller unwraps the owner key first and calls UnwrapUnder.
var ErrNeedsOwnerKey = errors.New("seal: data key is wrapped by an owner key")

func (k *Keyring) wrap(ad, key []byte) (WrappedKey, error) {
	aead := k.aeads[k.active]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return WrappedKey{}, err
	}
	return WrappedKey{KID: k.active, Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, key, ad)}, nil
}

func (k *Keyring) unwrap(ad []byte, w WrappedKey) ([]byte, error) {
	aead, ok := k.aeads[w.KID]
	if !ok || len(w.Nonce) != aead.NonceSize() {
		return nil, ErrDecrypt
	}
	key, err := aead.Open(nil, w.Nonce, w.Ciphertext, ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return key, nil
}
