package app

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
)

// CreateCredential stores a credential for the owner's server, in four
// steps: decide (validate against the server's state), seal the secret
// under a new data key and store the wrapped key, append the event
// expecting the server's version, and on a certain failure destroy the key
// again. Concurrent creates on one server never conflict with each other
// (each has its own subject; they all expect the server's subject, which
// only the server's own writes change); a create racing the deletion of its
// server is either stored before it — and deleted with it — or refused 404.
func (v *Vault) CreateCredential(ctx context.Context, in Intent, owner events.Owner, serverID string, input domain.CredentialInput) (domain.Credential, Written, error) {
	// A pooled key the create does not use (it never appends, or its
	// credential needs no key) is destroyed; a used one is the create's.
	defer v.DiscardIntent(in)
	if in.key != nil && (in.key.pair != (poolPair{owner, serverID}) || in.key.id != in.ID) {
		return domain.Credential{}, Written{}, errors.New("app: the intent's pooled key is another create's")
	}
	if !domain.ValidServerID(serverID) {
		return domain.Credential{}, Written{}, domain.ErrServerNotFound
	}
	ctx, cancel := v.writeContext(ctx)
	defer cancel()
	st := v.Store()
	if st == nil {
		return domain.Credential{}, Written{}, ErrUnavailable
	}
	id := domain.CredentialID(in.ID)
	if c, seq, found, err := storedEarlier(ctx, st, in, events.CredentialSubject(serverID, id), domain.ApplyCredential); err != nil || found {
		if err == nil && c.Owner != owner {
			err = domain.ErrServerNotFound
		}
		return c, Written{Seq: seq}, err
	}
	var (
		c domain.Credential
		w Written
	)
	err := v.underLimit(ctx, v.credentialSlot(owner, serverID), func() error {
		var err error
		c, w, err = v.createCredential(ctx, st, in, owner, serverID, id, input)
		return err
	})
	return c, w, err
}

// createCredential decides, seals and appends a credential whose id in fixes.
func (v *Vault) createCredential(ctx context.Context, st *eventstore.Store, in Intent, owner events.Owner, serverID, id string,
	input domain.CredentialInput) (domain.Credential, Written, error) {
	s, err := v.ownServer(ctx, owner, serverID, false)
	if err != nil {
		return domain.Credential{}, Written{}, err
	}
	n, err := domain.CreateCredential(s, id, input, v.now())
	if err != nil {
		return domain.Credential{}, Written{}, err
	}
	var sealed *events.Sealed
	if n.NeedsSeal {
		if sealed, err = v.sealSecret(ctx, st, in, n); err != nil {
			return domain.Credential{}, Written{}, err
		}
	}
	c, recs := n.Seal(sealed)
	rec := recs[0]
	rec.ID = in.EventID
	for attempt := 0; ; attempt++ {
		seq, err := v.appendEvent(ctx, st, rec, events.ServerSubject(serverID), s.Version)
		switch {
		case err == nil:
			c.Version = seq
			v.state().creds.put(id, c)
			v.createdOn(owner, serverID, in.ID) // tops up the pair's key pool
			return c, Written{Seq: seq}, nil
		case errors.Is(err, errRetry) && attempt < retries:
			// The server changed: if it still exists, expect its new version.
			if s, err = v.ownServer(ctx, owner, serverID, true); err == nil {
				backoff(ctx, attempt)
				continue
			}
		case errors.Is(err, errRetry):
			err = domain.ErrConflict
		}
		// The event is certainly not stored (refused, or never taken) —
		// unless its outcome is unknown: then the key must stay. The key is
		// destroyed before the answer (a retry must not find it and reuse it
		// after its destruction), within what is left of the write's time:
		// with the stream gone (its key pooled, nothing else failed before
		// the append) the answer must not wait for it. A key left behind is
		// an orphan that a retry reuses or the sweep destroys.
		if n.NeedsSeal && !errors.Is(err, ErrOutcomeUnknown) {
			v.shredWithin(ctx, id)
		}
		return domain.Credential{}, Written{}, err
	}
}

// sealSecret seals the new credential's secret under its data key, which
// is stored (wrapped) in the keys stream before the event: taken from the
// pool, where it is stored already (app/keypool.go), or stored here. A
// credential id has one data key: an attempt that may follow an earlier one
// reuses the key that one stored, if any, instead of replacing it.
func (v *Vault) sealSecret(ctx context.Context, st *eventstore.Store, in Intent, n domain.NewCredential) (*events.Sealed, error) {
	b := seal.Binding{CredentialID: n.Record.AggregateID, ServerID: n.Record.ServerID, Owner: n.Record.Owner}
	var (
		dek []byte
		kid string // the key that wraps dek: mcp.credential.created v2 records it
	)
	if !in.Since.IsZero() {
		raw, err := st.GetKey(ctx, b.CredentialID)
		switch {
		case err == nil:
			var w seal.WrappedKey
			if json.Unmarshal(raw, &w) == nil {
				dek, _ = v.unwrapDataKey(ctx, b, w)
				kid = w.KID
			}
		case !errors.Is(err, eventstore.ErrKeyNotFound):
			return nil, ErrUnavailable
		}
	}
	if dek == nil && in.key.claim() { // stored ahead, bound to this id, server and owner
		dek, kid = in.key.dek, in.key.kid
	}
	if dek == nil {
		var w seal.WrappedKey
		var err error
		if dek, w, err = v.newDataKey(ctx, b); err != nil { // under the owner's key (app/custody.go)
			return nil, err
		}
		kid = w.KID
		if err := st.PutKey(ctx, b.CredentialID, marshalWrapped(w)); err != nil {
			seal.Wipe(dek)
			// No event was appended: nothing the user can see is stored. A
			// key stored after all is an orphan the projector's sweep removes.
			v.Log.Warn("storing a data key failed", "err", err)
			return nil, ErrUnavailable
		}
	}
	defer seal.Wipe(dek)
	pt, err := json.Marshal(n.Secret)
	if err != nil {
		return nil, err
	}
	defer seal.Wipe(pt)
	sealed, err := seal.Seal(dek, b, pt)
	if err != nil {
		return nil, err
	}
	sealed.DEKWrappedBy = kid
	return sealed, nil
}

// CredentialDoc returns the owner's credential of a server as the API sends
// it (GetCredential's object, stored by the projector).
func (v *Vault) CredentialDoc(ctx context.Context, owner events.Owner, serverID, id string) ([]byte, error) {
	if !domain.ValidServerID(serverID) || !domain.ValidCredentialID(id) {
		return nil, domain.ErrCredentialNotFound
	}
	if err := v.syncTree(ctx, owner, serverID); err != nil {
		return nil, err
	}
	doc, err := v.DB.View().CredentialDoc(ctx, owner, serverID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return nil, domain.ErrCredentialNotFound
	}
	return doc, err
}

// CredentialDocs appends one page of the credentials of the owner's server,
// as the API sends them, to dst (ListCredentials' objects).
func (v *Vault) CredentialDocs(ctx context.Context, owner events.Owner, serverID string, includeRevoked bool, p projections.Page, dst []byte) (projections.DocPage, error) {
	if !domain.ValidServerID(serverID) {
		return projections.DocPage{}, domain.ErrServerNotFound
	}
	if err := v.syncTree(ctx, owner, serverID); err != nil {
		return projections.DocPage{}, err
	}
	out, err := v.DB.View().CredentialDocs(ctx, owner, serverID, includeRevoked, p, dst)
	if errors.Is(err, projections.ErrNotFound) {
		return projections.DocPage{}, domain.ErrServerNotFound
	}
	return out, err
}

// credentialWrite runs a write on one credential of the owner's server,
// expecting the credential's version on its own subject.
func (v *Vault) credentialWrite(ctx context.Context, in Intent, owner events.Owner, serverID, id string,
	decide func(c domain.Credential) (domain.Credential, []events.Record, error)) (domain.Credential, Written, error) {
	if !domain.ValidServerID(serverID) || !domain.ValidCredentialID(id) {
		return domain.Credential{}, Written{}, domain.ErrCredentialNotFound
	}
	ctx, cancel := v.writeContext(ctx)
	defer cancel()
	st := v.Store()
	if st == nil {
		return domain.Credential{}, Written{}, ErrUnavailable
	}
	subject := events.CredentialSubject(serverID, id)
	if c, seq, found, err := storedEarlier(ctx, st, in, subject, domain.ApplyCredential); err != nil || found {
		if err == nil && c.Owner != owner {
			err = domain.ErrCredentialNotFound
		}
		return c, Written{Seq: seq}, err
	}
	c, w, err := decideAndAppend(ctx, v, st, in, subject,
		func(fresh bool) (domain.Credential, uint64, error) {
			if _, err := v.ownServer(ctx, owner, serverID, fresh); err != nil {
				return domain.Credential{}, 0, err
			}
			c, err := v.credential(ctx, st, serverID, id, fresh)
			if err == nil && (c.ID == "" || c.Owner != owner) {
				c = domain.Credential{}
			}
			return c, c.Version, err
		},
		decide,
		func(c domain.Credential, seq uint64) domain.Credential {
			c.Version = seq
			v.state().creds.keep(id, c, c.Deleted)
			return c
		})
	if domain.KindOf(err) == domain.KindNotFound {
		return domain.Credential{}, Written{}, domain.ErrCredentialNotFound
	}
	return c, w, err
}

// RevokeCredential revokes the credential and destroys its data key.
// Revoking a revoked credential stores nothing and answers it as it is.
func (v *Vault) RevokeCredential(ctx context.Context, in Intent, owner events.Owner, serverID, id string) (domain.Credential, Written, error) {
	c, w, err := v.credentialWrite(ctx, in, owner, serverID, id, func(c domain.Credential) (domain.Credential, []events.Record, error) {
		return domain.RevokeCredential(c, v.now())
	})
	if err != nil {
		return domain.Credential{}, Written{}, err
	}
	v.shred(ctx, id)
	return c, w, nil
}

// DeleteCredential deletes the credential and destroys its data key.
func (v *Vault) DeleteCredential(ctx context.Context, in Intent, owner events.Owner, serverID, id string) (Written, error) {
	_, w, err := v.credentialWrite(ctx, in, owner, serverID, id, func(c domain.Credential) (domain.Credential, []events.Record, error) {
		return domain.DeleteCredential(c, v.now())
	})
	if err != nil {
		return Written{}, err
	}
	v.releaseSlot(ctx, v.credentialSlot(owner, serverID))
	v.shred(ctx, id)
	return w, nil
}

// shred destroys data keys. A failure is logged, not returned: the event is
// already stored (or certainly not), and the projector keeps destroying the
// keys of revoked and deleted credentials until it succeeds.
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

// shredWithin destroys data keys within ctx's deadline (a write's), not a
// fresh one; a failure is logged.
func (v *Vault) shredWithin(ctx context.Context, credentialIDs ...string) {
	st := v.Store()
	if st == nil {
		return
	}
	for _, id := range credentialIDs {
		if err := st.DestroyKey(ctx, id); err != nil {
			v.Log.Warn("destroying the data key of a create that was not stored failed; a retry reuses it, or the sweep destroys it",
				"credential_id", id, "err", err)
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
	dek, err := v.unwrapDataKey(ctx, b, w)
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
