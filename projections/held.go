package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// Release applies the kept events of every held tree that this build can now
// decode, in sequence order, each tree in its own transaction: a tree whose
// events all decode is released; one that still has an unknown event stays
// held at that event. It returns the trees released and the shreds recorded.
func (d *DB) Release(ctx context.Context) (Applied, error) {
	var out Applied
	holds, err := d.Holds(ctx)
	if err != nil {
		return out, err
	}
	for _, h := range holds {
		released, shredded, err := d.release(ctx, h.ServerID)
		if err != nil {
			return out, err
		}
		out.Shredded = append(out.Shredded, shredded...)
		if released {
			out.Released = append(out.Released, h.ServerID)
		}
	}
	out.LastSeq, err = d.AppliedSeq(ctx)
	return out, err
}

func (d *DB) release(ctx context.Context, tree string) (bool, []string, error) {
	tx, err := d.beginWrite(ctx)
	if err != nil {
		return false, nil, err
	}
	defer tx.Rollback()
	a := d.newApplier(ctx, tx)
	progressed, released, err := a.releaseTree(tree)
	if err != nil || !progressed {
		return false, nil, err
	}
	if err := a.finish(); err != nil {
		return false, nil, err
	}
	if err := tx.Commit(); err != nil {
		return false, nil, err
	}
	return released, a.shredded, nil
}

// releaseTree applies, in a's transaction, the kept events of a held tree
// in sequence order: those an operator rejected are dropped, the others
// applied until one that this build cannot decode or that does not verify,
// where the tree stays held. progressed tells whether anything changed;
// released, whether the tree is no longer held. The caller finishes a.
func (a *applier) releaseTree(tree string) (progressed, released bool, err error) {
	rows, err := a.query(selectHeldEvents, tree)
	if err != nil {
		return false, false, err
	}
	var kept []Msg
	for rows.Next() {
		var m Msg
		if err := rows.Scan(&m.Seq, &m.Subject, &m.Data); err != nil {
			rows.Close()
			return false, false, err
		}
		kept = append(kept, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, false, err
	}
	var applied []uint64
	var stuck *Msg
	for i := range kept {
		m := Decode(kept[i].Seq, kept[i].Subject, kept[i].Data)
		if m.Err == nil {
			// Signature check and operator rejections (projections/custody.go).
			skip, err := a.releaseCheck(&m)
			if err != nil {
				return false, false, err
			}
			if skip {
				applied = append(applied, m.Seq)
				continue
			}
		}
		if m.Err != nil {
			stuck = &m
			break
		}
		if err := a.apply(m.Record, m.row); err != nil {
			return false, false, fmt.Errorf("projections: apply held seq %d (%s): %w", m.Seq, m.Type, err)
		}
		applied = append(applied, m.Seq)
	}
	if len(applied) == 0 {
		return false, false, nil // nothing this build can do yet
	}
	if err := a.exec(deleteHeldUpTo, tree, applied[len(applied)-1]); err != nil {
		return false, false, err
	}
	if stuck != nil {
		err = a.exec(updateHold, stuck.Seq, stuck.Type, stuck.Version, stuck.Err.Error(), tree)
	} else {
		err = a.exec(deleteHold, tree)
	}
	return err == nil, err == nil && stuck == nil, err
}

// Holds lists the held server trees, oldest hold first.
func (d *DB) Holds(ctx context.Context) ([]Hold, error) {
	rows, err := d.db().QueryContext(ctx, `SELECT h.server_id, h.seq, h.event_type, h.event_version, h.reason,
		(SELECT count(*) FROM held_events e WHERE e.server_id = h.server_id)
		FROM held_aggregates h ORDER BY h.seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Hold
	for rows.Next() {
		var h Hold
		if err := rows.Scan(&h.ServerID, &h.Seq, &h.EventType, &h.Version, &h.Reason, &h.Pending); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// Held returns a domain error of kind KindUnavailable (code aggregate_held)
// when the owner's server serverID is held, naming the event type and
// sequence; nil otherwise. A tree held for another owner is not revealed.
func (v View) Held(ctx context.Context, owner events.Owner, serverID string) error {
	var (
		seq     uint64
		typ     string
		version int
	)
	err := v.q.QueryRowContext(ctx, `SELECT h.seq, h.event_type, h.event_version FROM held_aggregates h
		LEFT JOIN servers s ON s.id = h.server_id
		WHERE h.server_id = +? AND (s.owner = +? OR (s.id IS NULL AND h.owner = +?))`,
		serverID, owner.Key(), owner.Key()).Scan(&seq, &typ, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if e := heldForBreak(ctx, v.q, serverID, seq); e != nil { // projections/custody.go
		return e
	}
	return HeldError(serverID, typ, version, seq)
}

// AnyHeld tells, in one snapshot, the sequence the read model has applied
// and whether it holds any tree at all (held trees are rare: reads skip the
// per-server check while none is held, see app.Vault.held).
func (v View) AnyHeld(ctx context.Context) (applied uint64, any bool, err error) {
	err = v.q.QueryRowContext(ctx, `SELECT (SELECT last_seq FROM projector_state WHERE id = 1),
		EXISTS (SELECT 1 FROM held_aggregates)`).Scan(&applied, &any)
	return applied, any, err
}

// HeldError is the error a read (or write) of a held tree answers with.
func HeldError(serverID, eventType string, version int, seq uint64) error {
	what := fmt.Sprintf("event %q version %d", eventType, version)
	if eventType == "" {
		what = "an unreadable event"
	}
	return &domain.Error{Kind: domain.KindUnavailable, Code: "aggregate_held", Message: fmt.Sprintf(
		"This MCP server is held at stream sequence %d: this vault build cannot apply %s. "+
			"It is served again once the projector is upgraded to a build that knows the event.", seq, what)}
}
