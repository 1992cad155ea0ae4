package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// ErrGap is returned by Apply when a record's sequence is beyond the next one
// the read model expects: the caller must resume from LastSeq()+1.
var ErrGap = errors.New("projections: sequence gap")

// Applied reports what one Apply did, for the side effects the caller owns
// (destroying the data keys of revoked and deleted credentials).
type Applied struct {
	LastSeq uint64
	// Shredded lists credentials whose data key must be destroyed.
	Shredded []string
}

// Apply applies records in stream order in one transaction, together with
// the new last sequence, so a crash never leaves half a batch. Records at or
// below the stored last sequence are skipped (redelivery is harmless); a
// record whose Event is nil (undecodable) only advances the sequence.
func (d *DB) Apply(ctx context.Context, recs []events.Record) (Applied, error) {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return Applied{}, err
	}
	defer tx.Rollback()
	var out Applied
	if err := tx.QueryRowContext(ctx, "SELECT last_seq FROM projector_state WHERE id = 1").Scan(&out.LastSeq); err != nil {
		return Applied{}, err
	}
	start := out.LastSeq
	for _, r := range recs {
		if r.Sequence <= out.LastSeq {
			continue
		}
		if r.Sequence != out.LastSeq+1 {
			if out.LastSeq == start {
				return Applied{}, fmt.Errorf("%w: at %d, got %d", ErrGap, out.LastSeq, r.Sequence)
			}
			break // commit what is contiguous; the caller resumes
		}
		if r.Event != nil {
			shred, err := applyOne(ctx, tx, r)
			if err != nil {
				return Applied{}, fmt.Errorf("projections: apply seq %d (%s): %w", r.Sequence, r.Event.EventType(), err)
			}
			out.Shredded = append(out.Shredded, shred...)
		}
		out.LastSeq = r.Sequence
	}
	if out.LastSeq == start {
		return out, nil
	}
	if _, err := tx.ExecContext(ctx, "UPDATE projector_state SET last_seq = ? WHERE id = 1", out.LastSeq); err != nil {
		return Applied{}, err
	}
	return out, tx.Commit()
}

const (
	insertServer = "INSERT OR REPLACE INTO servers (" + serverColumnsInsert + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
	insertCred   = "INSERT OR REPLACE INTO credentials (" + credentialColumnsInsert + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"

	serverColumnsInsert = `id, owner, account, user, name, server_label, server_url, server_description,
	allowed_tools, require_approval, metadata, created_at, updated_at, tree_seq`
	credentialColumnsInsert = `id, server_id, owner, account, user, name, auth_type, authorization_preview,
	header_names, expires_at, last_used_at, created_at, updated_at, revoked_at, secret`
)

// applyOne folds r into the stored state of its aggregate and writes the
// result back. It returns credentials whose data key must be destroyed.
func applyOne(ctx context.Context, tx *sql.Tx, r events.Record) ([]string, error) {
	switch e := r.Event.(type) {
	case events.ServerCreated:
		s := domain.ApplyServer(domain.Server{}, r)
		_, err := tx.ExecContext(ctx, insertServer, serverArgs(s, r.Sequence)...)
		return nil, err
	case events.ServerUpdated:
		s, _, err := scanServer(tx.QueryRowContext(ctx, "SELECT "+serverColumns+" FROM servers WHERE id = ?", r.ServerID))
		if err != nil {
			return nil, ignoreMissing(err)
		}
		s = domain.ApplyServer(s, r)
		_, err = tx.ExecContext(ctx, insertServer, serverArgs(s, r.Sequence)...)
		return nil, err
	case events.ServerDeleted:
		if _, err := tx.ExecContext(ctx, "DELETE FROM credentials WHERE server_id = ?", r.ServerID); err != nil {
			return nil, err
		}
		_, err := tx.ExecContext(ctx, "DELETE FROM servers WHERE id = ?", r.ServerID)
		return e.CredentialIDs, err
	case events.CredentialCreated:
		c := domain.ApplyCredential(domain.Credential{}, r)
		if _, err := tx.ExecContext(ctx, insertCred, credentialArgs(c)...); err != nil {
			return nil, err
		}
		return nil, bumpTree(ctx, tx, r)
	case events.CredentialDeleted:
		if _, err := tx.ExecContext(ctx, "DELETE FROM credentials WHERE id = ?", r.AggregateID); err != nil {
			return nil, err
		}
		return []string{r.AggregateID}, bumpTree(ctx, tx, r)
	case events.CredentialRevoked, events.CredentialUsed:
		c, err := scanCredential(tx.QueryRowContext(ctx, "SELECT "+credentialColumns+" FROM credentials WHERE id = ?", r.AggregateID))
		if err != nil {
			return nil, ignoreMissing(err)
		}
		c = domain.ApplyCredential(c, r)
		if _, err := tx.ExecContext(ctx, insertCred, credentialArgs(c)...); err != nil {
			return nil, err
		}
		var shred []string
		if c.RevokedAt != nil {
			shred = []string{c.ID}
		}
		return shred, bumpTree(ctx, tx, r)
	}
	return nil, nil
}

// bumpTree records r's sequence as the newest under its server.
func bumpTree(ctx context.Context, tx *sql.Tx, r events.Record) error {
	_, err := tx.ExecContext(ctx, "UPDATE servers SET tree_seq = ? WHERE id = ?", r.Sequence, r.ServerID)
	return err
}

// ignoreMissing treats an event about an aggregate the read model no longer
// holds (deleted meanwhile) as applied.
func ignoreMissing(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
