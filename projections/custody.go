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
}

// ExpiringBetween lists live (not revoked) credentials whose expires_at lies
// in (from, to], oldest first, at most limit.
func (d *DB) ExpiringBetween(ctx context.Context, from, to time.Time, limit int) ([]Expiring, error) {
	rows, err := d.sql.QueryContext(ctx, `SELECT id, server_id, account, user, expires_at FROM credentials
		WHERE expires_at IS NOT NULL AND revoked_at IS NULL AND expires_at > ? AND expires_at <= ?
		ORDER BY expires_at, id LIMIT ?`, events.NewTime(from).String(), events.NewTime(to).String(), limit)
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
		if err := rows.Scan(&e.ID, &e.ServerID, &e.Owner.Account, &e.Owner.User, &at); err != nil {
			return nil, err
		}
		e.ExpiresAt = parseTime(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
