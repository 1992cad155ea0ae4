package app

import (
	"context"
	"errors"
	"strings"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/seal"
)

// Key custody on the command side: a credential's data key is wrapped by its
// owner's key, itself wrapped by the active master key (see seal/owner.go).

// newDataKey creates the data key of a new credential under its owner's key,
// creating the owner key on the owner's first credential.
func (v *Vault) newDataKey(ctx context.Context, b seal.Binding) ([]byte, seal.WrappedKey, error) {
	okey, err := v.ownerKey(ctx, b.Owner)
	if err != nil {
		return nil, seal.WrappedKey{}, err
	}
	defer seal.Wipe(okey)
	return seal.NewDataKeyUnder(okey, b)
}

// unwrapDataKey opens a credential's data key: through its owner's key, or
// directly with a master key for data keys written before owner keys.
// An erased owner's key is gone: seal.ErrDecrypt.
func (v *Vault) unwrapDataKey(ctx context.Context, b seal.Binding, w seal.WrappedKey) ([]byte, error) {
	if !strings.HasPrefix(w.KID, seal.OwnerKIDPrefix) {
		return v.Keys.Unwrap(b, w)
	}
	st := v.Store()
	if st == nil {
		return nil, ErrUnavailable
	}
	rec, err := st.GetOwnerKey(ctx, seal.OwnerKeyID(b.Owner))
	if errors.Is(err, eventstore.ErrKeyNotFound) {
		return nil, seal.ErrDecrypt
	}
	if err != nil {
		return nil, err
	}
	okey, err := v.Keys.OpenOwnerKey(b.Owner, rec)
	if err != nil {
		return nil, err
	}
	defer seal.Wipe(okey)
	return seal.UnwrapUnder(okey, b, w)
}

// ownerKey returns the owner's key in clear (the caller wipes it), creating
// and storing it on first use.
func (v *Vault) ownerKey(ctx context.Context, o events.Owner) ([]byte, error) {
	st := v.Store()
	if st == nil {
		return nil, ErrUnavailable
	}
	id := seal.OwnerKeyID(o)
	rec, err := st.GetOwnerKey(ctx, id)
	if errors.Is(err, eventstore.ErrKeyNotFound) {
		key, fresh, err := v.Keys.NewOwnerKey(o)
		if err != nil {
			return nil, err
		}
		seal.Wipe(key)
		if rec, err = st.PutOwnerKeyIfAbsent(ctx, id, fresh); err != nil {
			return nil, ErrUnavailable
		}
	} else if err != nil {
		return nil, ErrUnavailable
	}
	return v.Keys.OpenOwnerKey(o, rec)
}
