package app

import (
	"context"
	"errors"
	"time"

	"github.com/mcpvault/vault/events"
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
	rec := events.Record{Meta: events.Meta{ID: v.newULID(at).String(), AggregateID: e.ID, ServerID: e.ServerID, Owner: e.Owner, OccurredAt: at}, Event: ev}
	wctx, cancel := v.writeContext(ctx)
	defer cancel()
	_, err := v.appendEvent(wctx, st, rec, subject, 0)
	switch {
	case errors.Is(err, errRetry):
		return 0, nil // already recorded (by another scheduler, or before a crash)
	case err != nil:
		return 0, err
	}
	return 1, nil
}
