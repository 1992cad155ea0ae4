package app

import (
	"context"
	"errors"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/seal"
)

// Erased is the outcome of an erase.
type Erased struct {
	OwnerKeyID string
	ServerIDs  []string
	Sequence   uint64 // of the mcp.owner.erased event
}

// EraseOwner erases an end user of an account: it deletes every server of
// theirs (each with its credentials, through the ordinary delete, so the
// command side and the read model agree they are gone), appends
// mcp.owner.erased (ids only), and destroys the owner key that wraps the
// data keys of all their credentials, which makes every secret of theirs
// unrecoverable at once, including from the raw stream. It is idempotent:
// erasing again deletes what was created since and destroys the key again.
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
		err := v.DeleteServer(ctx, owner, id)
		if err != nil && !errors.Is(err, domain.ErrServerNotFound) {
			return Erased{}, err
		}
		out.ServerIDs = append(out.ServerIDs, id)
	}
	subject := events.OwnerSubject(out.OwnerKeyID)
	now := v.now()
	id := v.newULID(now).String()
	body, err := events.Marshal(events.Meta{ID: id, AggregateID: out.OwnerKeyID, Owner: owner, OccurredAt: now},
		events.OwnerErased{OwnerKeyID: out.OwnerKeyID, ServerIDs: out.ServerIDs})
	if err != nil {
		return Erased{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		last, err := st.LastOnSubject(wctx, subject)
		if err != nil {
			return Erased{}, ErrUnavailable
		}
		out.Sequence, err = v.appendChained(wctx, st, subject, body, id, last)
		if errors.Is(err, eventstore.ErrConflict) && attempt < 3 {
			continue // another erase of the same owner won; link after it
		}
		if err != nil && !errors.Is(err, eventstore.ErrDuplicate) {
			return Erased{}, ErrUnavailable
		}
		break
	}
	if err := st.DestroyOwnerKey(wctx, out.OwnerKeyID); err != nil {
		return Erased{}, ErrUnavailable
	}
	return out, nil
}

// appendChained appends an event after last on its literal subject.
func (v *Vault) appendChained(ctx context.Context, st *eventstore.Store, subject string, body []byte, msgID string, last eventstore.Last) (uint64, error) {
	return st.Append(ctx, subject, body, msgID, subject, last.Seq)
}
