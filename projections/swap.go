package projections

import (
	"context"
	"errors"
	"fmt"

	"github.com/mattn/go-sqlite3"
)

// ReplaceContents atomically replaces the contents of the live read model at
// livePath with the contents of d, using SQLite's online backup into the live
// file in one write transaction: readers (in any process) see the old state
// until the commit and the new state after it, and the running projector
// resumes from the new file's last sequence. Renaming files instead would
// strand the old -wal/-shm under the new name.
func (d *DB) ReplaceContents(ctx context.Context, livePath string) error {
	live, err := Open(ctx, livePath, Writer)
	if err != nil {
		return err
	}
	defer live.Close()
	// The live file keeps its instance id: the API and the projector using
	// it keep naming their applied notifications alike.
	if err := setInstanceID(ctx, d.sql, live.InstanceID()); err != nil {
		return err
	}
	dst, err := live.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer dst.Close()
	src, err := d.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	return dst.Raw(func(dc any) error {
		return src.Raw(func(sc any) error {
			dconn, ok1 := dc.(*sqlite3.SQLiteConn)
			sconn, ok2 := sc.(*sqlite3.SQLiteConn)
			if !ok1 || !ok2 {
				return errors.New("projections: not a SQLite connection")
			}
			b, err := dconn.Backup("main", sconn, "main")
			if err != nil {
				return fmt.Errorf("projections: backup: %w", err)
			}
			for {
				done, err := b.Step(-1)
				if err != nil {
					b.Finish()
					return fmt.Errorf("projections: backup step: %w", err)
				}
				if done {
					break
				}
			}
			return b.Finish()
		})
	})
}
