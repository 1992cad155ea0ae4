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
	a := &applier{ctx: ctx, tx: tx, d: d, trees: map[string]uint64{}}
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
			shred, err := a.apply(r)
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
	for id, seq := range a.trees {
		if err := a.exec(bumpTree, seq, id); err != nil {
			return Applied{}, err
		}
	}
	if err := a.exec(setLastSeq, out.LastSeq); err != nil {
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

const (
	bumpTree      = "UPDATE servers SET tree_seq = ? WHERE id = ?"
	setLastSeq    = "UPDATE projector_state SET last_seq = ? WHERE id = 1"
	selectServer  = "SELECT " + serverColumns + " FROM servers WHERE id = ?"
	selectCred    = "SELECT " + credentialColumns + " FROM credentials WHERE id = ?"
	deleteCreds   = "DELETE FROM credentials WHERE server_id = ?"
	deleteServer  = "DELETE FROM servers WHERE id = ?"
	deleteCred    = "DELETE FROM credentials WHERE id = ?"
	selectCredIDs = "SELECT id FROM credentials WHERE server_id = ?"
)

// applyStatements are prepared once per writer.
var applyStatements = []string{insertServer, insertCred, bumpTree, setLastSeq, selectServer, selectCred,
	deleteCreds, deleteServer, deleteCred, selectCredIDs}

// applier applies the records of one transaction. The newest sequence per
// server tree is written once per transaction, not once per event.
type applier struct {
	ctx   context.Context
	tx    *sql.Tx
	d     *DB
	trees map[string]uint64
}

// exec runs a cached prepared statement inside the transaction.
func (a *applier) exec(query string, args ...any) error {
	stmt, err := a.d.stmt(query)
	if err != nil {
		return err
	}
	_, err = a.tx.StmtContext(a.ctx, stmt).ExecContext(a.ctx, args...)
	return err
}

func (a *applier) queryRow(query string, args ...any) *sql.Row {
	stmt, err := a.d.stmt(query)
	if err != nil {
		return a.tx.QueryRowContext(a.ctx, query, args...)
	}
	return a.tx.StmtContext(a.ctx, stmt).QueryRowContext(a.ctx, args...)
}

// apply folds r into the stored state of its aggregate and writes the
// result back. It returns credentials whose data key must be destroyed.
func (a *applier) apply(r events.Record) ([]string, error) {
	switch e := r.Event.(type) {
	case events.ServerCreated:
		s := domain.ApplyServer(domain.Server{}, r)
		return nil, a.exec(insertServer, serverArgs(s, r.Sequence)...)
	case events.ServerUpdated:
		s, _, err := scanServer(a.queryRow(selectServer, r.ServerID))
		if err != nil {
			return nil, ignoreMissing(err)
		}
		s = domain.ApplyServer(s, r)
		a.trees[r.ServerID] = r.Sequence
		return nil, a.exec(insertServer, serverArgs(s, r.Sequence)...)
	case events.ServerDeleted:
		delete(a.trees, r.ServerID)
		// Every credential under the server goes, and so does its data key —
		// also those the deciding API did not know of (e.CredentialIDs is
		// not a complete list).
		ids, err := a.credentialIDs(r.ServerID)
		if err != nil {
			return nil, err
		}
		known := make(map[string]bool, len(ids))
		for _, id := range ids {
			known[id] = true
		}
		for _, id := range e.CredentialIDs { // each key once
			if !known[id] {
				known[id] = true
				ids = append(ids, id)
			}
		}
		if err := a.exec(deleteCreds, r.ServerID); err != nil {
			return nil, err
		}
		return ids, a.exec(deleteServer, r.ServerID)
	case events.CredentialCreated:
		c := domain.ApplyCredential(domain.Credential{}, r)
		a.trees[r.ServerID] = r.Sequence
		return nil, a.exec(insertCred, credentialArgs(c)...)
	case events.CredentialDeleted:
		a.trees[r.ServerID] = r.Sequence
		return []string{r.AggregateID}, a.exec(deleteCred, r.AggregateID)
	case events.CredentialRevoked, events.CredentialUsed:
		a.trees[r.ServerID] = r.Sequence
		c, err := scanCredential(a.queryRow(selectCred, r.AggregateID))
		if err != nil {
			return nil, ignoreMissing(err)
		}
		c = domain.ApplyCredential(c, r)
		var shred []string
		if _, revoked := e.(events.CredentialRevoked); revoked {
			shred = []string{c.ID}
		}
		return shred, a.exec(insertCred, credentialArgs(c)...)
	}
	return nil, nil
}

// credentialIDs lists the credentials of a server.
func (a *applier) credentialIDs(serverID string) ([]string, error) {
	stmt, err := a.d.stmt(selectCredIDs)
	if err != nil {
		return nil, err
	}
	rows, err := a.tx.StmtContext(a.ctx, stmt).QueryContext(a.ctx, serverID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// ignoreMissing treats an event about an aggregate the read model no longer
// holds (deleted meanwhile) as applied.
func ignoreMissing(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
