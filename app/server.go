package app

import (
	"context"
	"errors"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
)

// CreateServer registers a server for owner, with the id the intent fixes.
func (v *Vault) CreateServer(ctx context.Context, in Intent, owner events.Owner, p domain.ServerPatch) (domain.Server, Written, error) {
	ctx, cancel := v.writeContext(ctx)
	defer cancel()
	st := v.Store()
	if st == nil {
		return domain.Server{}, Written{}, ErrUnavailable
	}
	id := domain.ServerID(in.ID)
	subject := events.ServerSubject(id)
	if s, seq, found, err := storedEarlier(ctx, st, in, subject, domain.ApplyServer); err != nil || found {
		return s, Written{Seq: seq}, err
	}
	s, recs, err := domain.CreateServer(owner, id, p, v.now())
	if err != nil {
		return domain.Server{}, Written{}, err
	}
	rec := recs[0]
	rec.ID = in.EventID
	var seq uint64
	err = v.underLimit(ctx, v.serverSlot(owner), func() error {
		// A new id's subject is empty; expecting so makes a second,
		// concurrent takeover of the same write fail instead of storing it twice.
		var err error
		seq, err = v.appendEvent(ctx, st, rec, subject, 0)
		if errors.Is(err, errRetry) {
			err = domain.ErrConflict
		}
		return err
	})
	if err != nil {
		return domain.Server{}, Written{}, err
	}
	s.Version = seq
	v.state().servers.put(id, s)
	return s, Written{Seq: seq}, nil
}

// ownServer returns the owner's server, loaded as loadServer does, or
// ErrServerNotFound (unknown, deleted or someone else's).
func (v *Vault) ownServer(ctx context.Context, owner events.Owner, id string, fresh bool) (domain.Server, error) {
	st := v.Store()
	if st == nil {
		return domain.Server{}, ErrUnavailable
	}
	s, err := v.server(ctx, st, id, fresh)
	if err != nil {
		return domain.Server{}, err
	}
	if s.ID == "" || s.Deleted || s.Owner != owner {
		return domain.Server{}, domain.ErrServerNotFound
	}
	return s, nil
}

// UpdateServer changes the given fields of the owner's server. Concurrent
// updates never lose one another: each is decided on the server's newest
// state and appended only if no other write came between.
func (v *Vault) UpdateServer(ctx context.Context, in Intent, owner events.Owner, id string, p domain.ServerPatch) (domain.Server, Written, error) {
	return v.serverWrite(ctx, in, owner, id, func(s domain.Server) (domain.Server, []events.Record, error) {
		return domain.UpdateServer(s, p, v.now())
	})
}

// DeleteServer deletes the owner's server with all its credentials. The
// projector's cascade destroys the data key of every credential under it.
func (v *Vault) DeleteServer(ctx context.Context, in Intent, owner events.Owner, id string) (Written, error) {
	_, w, err := v.serverWrite(ctx, in, owner, id, func(s domain.Server) (domain.Server, []events.Record, error) {
		return domain.DeleteServer(s, nil, v.now())
	})
	if err == nil {
		v.releaseSlot(ctx, v.serverSlot(owner))
		v.forgetSlot(ctx, v.credentialSlot(owner, id))
		v.dropKeys(owner, id)
	}
	return w, err
}

func (v *Vault) serverWrite(ctx context.Context, in Intent, owner events.Owner, id string,
	decide func(domain.Server) (domain.Server, []events.Record, error)) (domain.Server, Written, error) {
	if !domain.ValidServerID(id) {
		return domain.Server{}, Written{}, domain.ErrServerNotFound
	}
	ctx, cancel := v.writeContext(ctx)
	defer cancel()
	st := v.Store()
	if st == nil {
		return domain.Server{}, Written{}, ErrUnavailable
	}
	subject := events.ServerSubject(id)
	if s, seq, found, err := storedEarlier(ctx, st, in, subject, domain.ApplyServer); err != nil || found {
		if err == nil && s.Owner != owner {
			err = domain.ErrServerNotFound
		}
		return s, Written{Seq: seq}, err
	}
	return decideAndAppend(ctx, v, st, in, subject,
		func(fresh bool) (domain.Server, uint64, error) {
			s, err := v.ownServer(ctx, owner, id, fresh)
			return s, s.Version, err
		},
		decide,
		func(s domain.Server, seq uint64) domain.Server {
			s.Version = seq
			v.state().servers.keep(id, s, s.Deleted)
			return s
		})
}

// GetServer returns the owner's server.
func (v *Vault) GetServer(ctx context.Context, owner events.Owner, id string) (domain.Server, error) {
	if !domain.ValidServerID(id) {
		return domain.Server{}, domain.ErrServerNotFound
	}
	if err := v.syncTree(ctx, owner, id); err != nil {
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
