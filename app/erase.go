package app

import (
	"context"
	"errors"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/seal"
)

// Erased is the outcome of an erase.
type Erased struct {
	OwnerKeyID string
	ServerIDs  []string
	Written    Written // the mcp.owner.erased event
}

// EraseOwner erases an end user of an account: it deletes every server of
// theirs (each with its credentials, through the ordinary delete, so the
// command side and the read model agree they are gone), appends
// mcp.owner.erased (ids only), and destroys the owner key that wraps the
// data keys of all their credentials, which makes every secret of theirs
// unrecoverable at once, including from the raw stream. It is idempotent:
// erasing again deletes what was created since and destroys the key again.
//
// The owner's servers are found in the read model (the stream has no index
// by owner), after a Sync; a server created while the erase runs may be
// missed by the deletes, but its secrets are under the destroyed key and
// the projector drops every row of the owner when it applies the event.
func (v *Vault) EraseOwner(ctx context.Context, owner events.Owner) (Erased, error) {
	if owner.User == "" {
		return Erased{}, domain.Invalid("X-On-Behalf-Of", "Erase names the end user to erase in X-On-Behalf-Of.")
	}
	st := v.Store()
	if st == nil {
		return Erased{}, ErrUnavailable
	}
	if err := v.Sync(ctx); err != nil {
		return Erased{}, err
	}
	ids, err := v.DB.OwnerServers(ctx, owner)
	if err != nil {
		return Erased{}, err
	}
	out := Erased{OwnerKeyID: seal.OwnerKeyID(owner), ServerIDs: []string{}}
	for _, id := range ids {
		_, err := v.DeleteServer(ctx, v.NewIntent(), owner, id)
		if err != nil && !errors.Is(err, domain.ErrServerNotFound) {
			return Erased{}, err
		}
		out.ServerIDs = append(out.ServerIDs, id)
	}
	wctx, cancel := v.writeContext(ctx)
	defer cancel()
	now := v.now()
	rec := events.Record{Meta: events.Meta{ID: v.newULID(now).String(), AggregateID: out.OwnerKeyID, Owner: owner, OccurredAt: now},
		Event: events.OwnerErased{OwnerKeyID: out.OwnerKeyID, ServerIDs: out.ServerIDs}}
	subject := events.SubjectOf(rec)
	for attempt := 0; ; attempt++ {
		last, err := st.Last(wctx, subject)
		if err != nil && !errors.Is(err, eventstore.ErrNotFound) {
			return Erased{}, ErrUnavailable
		}
		seq, err := v.appendEvent(wctx, st, rec, subject, last.Seq)
		if errors.Is(err, errRetry) && attempt < retries {
			continue // another erase of the same owner came first: follow it
		}
		if err != nil {
			return Erased{}, err
		}
		out.Written = Written{Seq: seq}
		break
	}
	v.dropKeys(owner, "") // pooled keys are wrapped under the owner key
	if err := st.DestroyOwnerKey(wctx, out.OwnerKeyID); err != nil {
		v.Log.Warn("destroying an owner key failed; erase again", "owner_key_id", out.OwnerKeyID, "err", err)
		return Erased{}, ErrUnavailable
	}
	v.dropKeys(owner, "") // and those a fill wrapped meanwhile
	return out, nil
}
