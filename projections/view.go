package projections

import (
	"context"
	"database/sql"
)

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// View answers the read queries, either straight from the DB or from one
// consistent snapshot (Snapshot).
type View struct{ q querier }

// View returns a View over the DB, each query seeing the latest commit.
func (d *DB) View() View { return View{q: d.sql} }

// Snapshot runs fn on a View in which every query sees the same commit.
func (d *DB) Snapshot(ctx context.Context, fn func(View) error) error {
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(View{q: tx})
}
