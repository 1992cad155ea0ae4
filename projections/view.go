package projections

import (
	"context"
	"database/sql"
)

// querier runs the queries of a View. Every value a View query binds is
// written +? (a no-op on the value): SQLite marks a statement whose plan
// it weighs with a bound value (a column = ? filter under ORDER BY or a
// join, a LIMIT ?) for recompiling whenever its bindings are cleared, and the
// driver clears them on every use, so such a statement was compiled again
// on every read (for a list page, half of its SQLite time); through the
// unary + the planner does not look at the value. TestReadQueriesOnFatServers
// holds every View query to it.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// View answers the read queries, either straight from the DB or from one
// consistent snapshot (Snapshot).
type View struct{ q querier }

// View returns a View over the DB, each query seeing the latest commit.
func (d *DB) View() View { return View{q: d.db()} }

// Snapshot runs fn on a View in which every query sees the same commit.
func (d *DB) Snapshot(ctx context.Context, fn func(View) error) error {
	tx, err := d.db().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(View{q: tx})
}
