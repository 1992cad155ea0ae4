package app

import (
	"context"
	"errors"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
)

// CreateServer registers a server for owner.
func (v *Vault) CreateServer(ctx context.Context, owner events.Owner, p domain.ServerPatch) (domain.Server, error) {
	now := v.now()
	id := domain.ServerID(v.newULID(now))
	s, recs, err := domain.CreateServer(owner, id, p, now)
	if err != nil {
		return domain.Server{}, err
	}
	err = v.underLimit(ctx, v.serverSlot(owner), func() error {
		_, err := v.append(ctx, id, recs, 0, true)
		return err
	})
	if err != nil {
		return domain.Server{}, err
	}
	return s, nil
}

// GetServer returns the owner's server.
func (v *Vault) GetServer(ctx context.Context, owner events.Owner, id string) (domain.Server, error) {
	if !domain.ValidServerID(id) {
		return domain.Server{}, domain.ErrServerNotFound
	}
	if err := v.Sync(ctx); err != nil {
		return domain.Server{}, err
	}
	s, _, err := v.DB.View().GetServer(ctx, owner, id)
	if errors.Is(err, projections.ErrNotFound) {
		return domain.Server{}, domain.ErrServerNotFound
	}
	return s, err
}

// ListServers returns one page of the owner's servers.
func (v *Vault) ListServers(ctx context.Context, owner events.Owner, p projections.Page) ([]domain.Server, bool, error) {
	if err := v.Sync(ctx); err != nil {
		return nil, false, err
	}
	return v.DB.View().ListServers(ctx, owner, p)
}

// UpdateServer changes the given fields of the owner's server.
func (v *Vault) UpdateServer(ctx context.Context, owner events.Owner, id string, p domain.ServerPatch) (domain.Server, error) {
	var out domain.Server
	err := v.onServer(ctx, owner, id, func(_ projections.View, s domain.Server) ([]events.Record, error) {
		var recs []events.Record
		var err error
		out, recs, err = domain.UpdateServer(s, p, v.now())
		return recs, err
	})
	return out, err
}

// DeleteServer deletes the owner's server with all its credentials and
// destroys their data keys.
func (v *Vault) DeleteServer(ctx context.Context, owner events.Owner, id string) error {
	var creds []string
	err := v.onServer(ctx, owner, id, func(view projections.View, s domain.Server) ([]events.Record, error) {
		ids, err := view.ServerCredentialIDs(ctx, s.ID)
		if err != nil {
			return nil, err
		}
		creds = ids
		_, recs, err := domain.DeleteServer(s, ids, v.now())
		return recs, err
	})
	if err != nil {
		return err
	}
	v.releaseSlot(ctx, v.serverSlot(owner))
	v.forgetSlot(ctx, v.credentialSlot(owner, id))
	v.shred(ctx, creds...)
	return nil
}
