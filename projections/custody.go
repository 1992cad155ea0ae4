package projections

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/mcpvault/vault/events"
)

// CredentialBinding returns the server and owner of a live credential (what
// its data key's wrapping is bound to), for re-wrapping keys.
func (d *DB) CredentialBinding(ctx context.Context, id string) (serverID string, owner events.Owner, err error) {
	err = d.sql.QueryRowContext(ctx, "SELECT server_id, account, user FROM credentials WHERE id = ?", id).
		Scan(&serverID, &owner.Account, &owner.User)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	return serverID, owner, err
}

// OwnerServers lists the ids of an owner's servers.
func (d *DB) OwnerServers(ctx context.Context, o events.Owner) ([]string, error) {
	rows, err := d.sql.QueryContext(ctx, "SELECT id FROM servers WHERE owner = ? ORDER BY id", o.Key())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Expiring is a live credential with an expiry, as the scheduler sees it.
type Expiring struct {
	ID, ServerID string
	Owner        events.Owner
	ExpiresAt    events.Time
	// Notice is what the stream already holds: 0 nothing, 1 expiring_soon,
	// 2 expired.
	Notice int
}

// ExpiryDue lists live (not revoked) credentials that need an expiry notice
// at now: expired ones (expires_at in (now-horizon, now]) without an expired
// notice, and ones expiring within lead without an expiring_soon notice;
// soonest first, at most limit.
func (d *DB) ExpiryDue(ctx context.Context, now time.Time, lead, horizon time.Duration, limit int) ([]Expiring, error) {
	nowS := events.NewTime(now).String()
	rows, err := d.sql.QueryContext(ctx, `SELECT c.id, c.server_id, c.account, c.user, c.expires_at, COALESCE(x.notice, 0)
		FROM credentials c LEFT JOIN credential_expiry x ON x.id = c.id
		WHERE c.expires_at IS NOT NULL AND c.revoked_at IS NULL AND c.expires_at > ? AND c.expires_at <= ?
		  AND COALESCE(x.notice, 0) < CASE WHEN c.expires_at <= ? THEN 2 ELSE 1 END
		ORDER BY c.expires_at, c.id LIMIT ?`,
		events.NewTime(now.Add(-horizon)).String(), events.NewTime(now.Add(lead)).String(), nowS, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Expiring
	for rows.Next() {
		var (
			e  Expiring
			at string
		)
		if err := rows.Scan(&e.ID, &e.ServerID, &e.Owner.Account, &e.Owner.User, &at, &e.Notice); err != nil {
			return nil, err
		}
		e.ExpiresAt = parseTime(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Statements the projector runs for the audit branch's events (prepared
// with the others, see applyStatements).
const (
	upsertExpiryNotice = "INSERT INTO credential_expiry (id, notice) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET notice = max(notice, excluded.notice)"
	deleteOwnerCreds   = "DELETE FROM credentials WHERE owner = ?"
	deleteOwnerServers = "DELETE FROM servers WHERE owner = ?"
)

// applyCustody applies the expiry and erasure events.
func (a *applier) applyCustody(r events.Record) error {
	switch r.Event.(type) {
	case events.CredentialExpiringSoon:
		return a.exec(upsertExpiryNotice, r.AggregateID, 1)
	case events.CredentialExpired:
		return a.exec(upsertExpiryNotice, r.AggregateID, 2)
	case events.OwnerErased:
		// The erase deleted the owner's servers with their own events first;
		// this also removes any the erase raced with.
		if err := a.exec(deleteOwnerCreds, r.Owner.Key()); err != nil {
			return err
		}
		return a.exec(deleteOwnerServers, r.Owner.Key())
	}
	return nil
}
