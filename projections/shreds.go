package projections

import (
	"context"
	"strings"
)

// PendingShred is a data key whose destruction is due.
type PendingShred struct {
	CredentialID string
	Seq          uint64
	Attempts     int
}

// PendingShreds returns up to limit due destructions, oldest first.
func (d *DB) PendingShreds(ctx context.Context, limit int) ([]PendingShred, error) {
	rows, err := d.db().QueryContext(ctx,
		"SELECT credential_id, seq, attempts FROM pending_shreds ORDER BY seq, credential_id LIMIT ?", limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PendingShred
	for rows.Next() {
		var p PendingShred
		if err := rows.Scan(&p.CredentialID, &p.Seq, &p.Attempts); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ShredsDone removes destroyed keys from pending_shreds and records failed
// attempts of the others.
func (d *DB) ShredsDone(ctx context.Context, done []string, failed map[string]string) error {
	if len(done) == 0 && len(failed) == 0 {
		return nil
	}
	tx, err := d.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, id := range done {
		if _, err := tx.ExecContext(ctx, "DELETE FROM pending_shreds WHERE credential_id = ?", id); err != nil {
			return err
		}
	}
	for id, msg := range failed {
		if _, err := tx.ExecContext(ctx, "UPDATE pending_shreds SET attempts = attempts + 1, last_error = ? WHERE credential_id = ?",
			msg, id); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// RecordShreds records destructions that are due (e.g. found by a sweep), so
// they survive a crash like those the projection records.
func (d *DB) RecordShreds(ctx context.Context, seq uint64, ids []string) error {
	tx, err := d.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, insertShred, id, seq); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Status is what the read model says about the projector's side effects.
type Status struct {
	LastSeq       uint64
	Holds         []Hold
	PendingShreds int
}

// Status reads the held trees and the number of pending destructions.
func (d *DB) Status(ctx context.Context) (Status, error) {
	var s Status
	var err error
	if s.LastSeq, err = d.AppliedSeq(ctx); err != nil {
		return s, err
	}
	if s.Holds, err = d.Holds(ctx); err != nil {
		return s, err
	}
	err = d.db().QueryRowContext(ctx, "SELECT count(*) FROM pending_shreds").Scan(&s.PendingShreds)
	return s, err
}

// CredentialState is what a sweep needs to know about a credential.
type CredentialState int

// The states of a credential as the read model knows it.
const (
	// CredentialAbsent: no row (never projected, deleted, or under a held tree).
	CredentialAbsent CredentialState = iota
	// CredentialLive: a row that is not revoked.
	CredentialLive
	// CredentialRevoked: a revoked row.
	CredentialRevoked
)

// CredentialStates returns the state of each credential id, looking them up
// 500 at a time.
func (d *DB) CredentialStates(ctx context.Context, ids []string) (map[string]CredentialState, error) {
	out := make(map[string]CredentialState, len(ids))
	for lo := 0; lo < len(ids); lo += 500 {
		chunk := ids[lo:min(lo+500, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
			out[id] = CredentialAbsent
		}
		q := "SELECT id, revoked_at IS NOT NULL FROM credentials WHERE id IN (?" + strings.Repeat(",?", len(chunk)-1) + ")"
		rows, err := d.db().QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			var revoked bool
			if err := rows.Scan(&id, &revoked); err != nil {
				rows.Close()
				return nil, err
			}
			if revoked {
				out[id] = CredentialRevoked
			} else {
				out[id] = CredentialLive
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// IsHeld reports whether the server tree is held.
func (d *DB) IsHeld(ctx context.Context, serverID string) (bool, error) {
	var n int
	err := d.db().QueryRowContext(ctx, "SELECT count(*) FROM held_aggregates WHERE server_id = ?", serverID).Scan(&n)
	return n > 0, err
}
