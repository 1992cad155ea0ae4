package app

import (
	"context"
	"errors"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
)

// RecordExpiry appends the expiry notices due for e at now: expired once it
// passed expires_at, expiring_soon while it is within lead of it. Each lives
// on its own subject and is appended expecting that subject to be empty, so
// the stream holds at most one of each per credential even when two
// schedulers race or one retries after a crash. It returns how many it
// appended.
func (v *Vault) RecordExpiry(ctx context.Context, e projections.Expiring, now time.Time, lead time.Duration) (int, error) {
	st := v.Store()
	if st == nil {
		return 0, ErrUnavailable
	}
	var (
		ev      events.Event
		subject string
	)
	switch {
	case !e.ExpiresAt.After(now) && e.Notice < 2:
		ev, subject = events.CredentialExpired{ExpiresAt: e.ExpiresAt}, events.ExpiredSubject(e.ServerID, e.ID)
	case e.ExpiresAt.After(now) && e.Notice < 1:
		ev, subject = events.CredentialExpiringSoon{ExpiresAt: e.ExpiresAt, LeadSeconds: int64(lead / time.Second)},
			events.ExpiringSoonSubject(e.ServerID, e.ID)
	default:
		return 0, nil
	}
	at := events.NewTime(now)
	id := v.newULID(at).String()
	body, err := events.Marshal(events.Meta{ID: id, AggregateID: e.ID, ServerID: e.ServerID, Owner: e.Owner, OccurredAt: at}, ev)
	if err != nil {
		return 0, err
	}
	_, err = v.appendNotice(ctx, st, subject, body, id)
	switch {
	case errors.Is(err, eventstore.ErrConflict):
		return 0, nil // already recorded (by another scheduler, or before a crash)
	case err != nil:
		return 0, err
	}
	return 1, nil
}

// appendNotice appends a notice that the subject must not hold yet.
func (v *Vault) appendNotice(ctx context.Context, st *eventstore.Store, subject string, body []byte, id string) (uint64, error) {
	return st.Append(ctx, subject, body, id, subject, 0)
}
