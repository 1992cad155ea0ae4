package app

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
)

// CreateCredential stores a credential for the owner's server. The secret is
// sealed under a fresh data key; the wrapped data key is stored before the
// event, and destroyed again if the event cannot be stored.
func (v *Vault) CreateCredential(ctx context.Context, owner events.Owner, serverID string, in domain.CredentialInput) (domain.Credential, error) {
	now := v.now()
	id := domain.CredentialID(v.newULID(now))
	var (
		out     domain.Credential
		sealed  *events.Sealed
		wrapped []byte
	)
	sealer := func(c domain.Credential, s domain.Secret) (*events.Sealed, error) {
		if sealed != nil { // a retry after a lost race reuses the first sealing
			return sealed, nil
		}
		b := seal.Binding{CredentialID: c.ID, ServerID: c.ServerID, Owner: c.Owner}
		dek, w, err := v.Keys.NewDataKey(b)
		if err != nil {
			return nil, err
		}
		defer seal.Wipe(dek)
		pt, err := json.Marshal(s)
		if err != nil {
			return nil, err
		}
		defer seal.Wipe(pt)
		if sealed, err = seal.Seal(dek, b, pt); err != nil {
			return nil, err
		}
		wrapped = marshalWrapped(w)
		return sealed, nil
	}
	keyStored := false
	err := v.underLimit(ctx, v.credentialSlot(owner, serverID), func() error {
		return v.onServer(ctx, owner, serverID, func(_ projections.View, s domain.Server) ([]events.Record, error) {
			c, recs, err := domain.CreateCredential(s, id, in, now, sealer)
			if err != nil {
				return nil, err
			}
			if wrapped != nil && !keyStored {
				st := v.Store()
				if st == nil {
					return nil, ErrUnavailable
				}
				if err := st.PutKey(ctx, id, wrapped); err != nil {
					return nil, ErrUnavailable
				}
				keyStored = true
			}
			out = c
			return recs, nil
		})
	})
	if err != nil {
		if keyStored {
			v.shred(ctx, id)
		}
		return domain.Credential{}, err
	}
	return out, nil
}

// GetCredential returns the owner's credential of a server.
func (v *Vault) GetCredential(ctx context.Context, owner events.Owner, serverID, id string) (domain.Credential, error) {
	if !domain.ValidServerID(serverID) || !domain.ValidCredentialID(id) {
		return domain.Credential{}, domain.ErrCredentialNotFound
	}
	if err := v.Sync(ctx); err != nil {
		return domain.Credential{}, err
	}
	c, err := v.DB.View().GetCredential(ctx, owner, serverID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return domain.Credential{}, domain.ErrCredentialNotFound
	}
	return c, err
}

// ListCredentials returns one page of the credentials of the owner's server.
func (v *Vault) ListCredentials(ctx context.Context, owner events.Owner, serverID string, includeRevoked bool, p projections.Page) ([]domain.Credential, bool, error) {
	if !domain.ValidServerID(serverID) {
		return nil, false, domain.ErrServerNotFound
	}
	if err := v.Sync(ctx); err != nil {
		return nil, false, err
	}
	var (
		out  []domain.Credential
		more bool
	)
	err := v.DB.Snapshot(ctx, func(view projections.View) error {
		if _, _, err := view.GetServer(ctx, owner, serverID); err != nil {
			if errors.Is(err, projections.ErrNotFound) {
				return domain.ErrServerNotFound
			}
			return err
		}
		var err error
		out, more, err = view.ListCredentials(ctx, owner, serverID, includeRevoked, p)
		return err
	})
	return out, more, err
}

// onCredential runs a write on one credential of the owner's server.
func (v *Vault) onCredential(ctx context.Context, owner events.Owner, serverID, id string,
	decide func(c domain.Credential) (domain.Credential, []events.Record, error)) (domain.Credential, error) {
	if !domain.ValidCredentialID(id) {
		return domain.Credential{}, domain.ErrCredentialNotFound
	}
	var out domain.Credential
	err := v.onServer(ctx, owner, serverID, func(view projections.View, s domain.Server) ([]events.Record, error) {
		c, err := view.GetCredential(ctx, owner, serverID, id)
		if errors.Is(err, projections.ErrNotFound) {
			return nil, domain.ErrCredentialNotFound
		}
		if err != nil {
			return nil, err
		}
		var recs []events.Record
		out, recs, err = decide(c)
		return recs, err
	})
	if domain.KindOf(err) == domain.KindNotFound {
		return domain.Credential{}, domain.ErrCredentialNotFound
	}
	return out, err
}

// RevokeCredential revokes the credential and destroys its data key.
func (v *Vault) RevokeCredential(ctx context.Context, owner events.Owner, serverID, id string) (domain.Credential, error) {
	c, err := v.onCredential(ctx, owner, serverID, id, func(c domain.Credential) (domain.Credential, []events.Record, error) {
		return domain.RevokeCredential(c, v.now())
	})
	if err != nil {
		return domain.Credential{}, err
	}
	v.shred(ctx, id)
	return c, nil
}

// DeleteCredential deletes the credential and destroys its data key.
func (v *Vault) DeleteCredential(ctx context.Context, owner events.Owner, serverID, id string) error {
	_, err := v.onCredential(ctx, owner, serverID, id, func(c domain.Credential) (domain.Credential, []events.Record, error) {
		return domain.DeleteCredential(c, v.now())
	})
	if err != nil {
		return err
	}
	v.releaseSlot(ctx, v.credentialSlot(owner, serverID))
	v.shred(ctx, id)
	return nil
}

// shred destroys data keys. A failure is logged, not returned: the event is
// already stored, and the projector destroys the key again when it applies
// the event, so a crash or outage here only delays the destruction.
func (v *Vault) shred(ctx context.Context, credentialIDs ...string) {
	st := v.Store()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, id := range credentialIDs {
		if err := st.DestroyKey(ctx, id); err != nil {
			v.Log.Warn("destroying data key failed; the projector will retry", "credential_id", id, "err", err)
		}
	}
}

// OpenSecret decrypts a credential's secret (for an upstream call only).
func (v *Vault) OpenSecret(ctx context.Context, c domain.Credential) (domain.Secret, error) {
	var s domain.Secret
	if c.Secret == nil {
		return s, nil
	}
	st := v.Store()
	if st == nil {
		return s, ErrUnavailable
	}
	raw, err := st.GetKey(ctx, c.ID)
	if err != nil {
		return s, err
	}
	var w seal.WrappedKey
	if err := json.Unmarshal(raw, &w); err != nil {
		return s, seal.ErrDecrypt
	}
	b := seal.Binding{CredentialID: c.ID, ServerID: c.ServerID, Owner: c.Owner}
	dek, err := v.Keys.Unwrap(b, w)
	if err != nil {
		return s, err
	}
	defer seal.Wipe(dek)
	pt, err := seal.Open(dek, b, c.Secret)
	if err != nil {
		return s, err
	}
	defer seal.Wipe(pt)
	err = json.Unmarshal(pt, &s)
	return s, err
}
