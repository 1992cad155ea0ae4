package projections

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
)

// Generations. A rebuild writes a new file next to the live read model
// (GenerationPath) and publishes it by making the live path a symbolic link
// to it, in one rename (Publish): the swap costs the same for 100 or
// 1,000,000 events. Before, the rebuild copied every page into the live
// file through its WAL and checkpointed them again (19 s of a 24 s swap for
// 1,000,000 events, docs/benchmarks.md). SQLite resolves the link (any
// SQLite since 3.x does unless opened with SQLITE_OPEN_NOFOLLOW), so the new
// file's -wal and -shm are named after it, and whatever opens the live path
// (the API, the projector, the sqlite3 shell) opens the new file. Processes
// that have the old file open notice it by Moved and open the live path
// again: the projector at each write transaction (under its write lock)
// and every 0.5 s when idle, the API's read pool before each query (only
// once the new file has applied at least as much as the old one, so that
// no read goes back in time).

// GenerationPath returns a new file name for a generation of the read
// model at live, in the same directory.
func GenerationPath(live string) string {
	return live + ".gen-" + ulid.Make().String()
}

// resolve returns the file path names: path itself, or the file its
// symbolic link names when it is one. A missing path resolves to itself
// (Open creates it).
func resolve(path string) (string, error) {
	r, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return path, nil
	}
	return r, err
}

// Publish makes live name the generation file gen, atomically (a symbolic
// link renamed over live), and returns the files of the generation it
// replaced, for RemoveLater: the old generation with its -wal and -shm, or,
// when live was a plain file (replaced by the rename), its -wal and -shm
// (none when live was a link to a file that is not a generation of it).
// The caller must have made sure that gen has applied at least what live
// had (see LockWrites).
func Publish(gen, live string) ([]string, error) {
	old := []string{live + "-wal", live + "-shm"}
	if target, err := os.Readlink(live); err == nil {
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(live), target)
		}
		old = []string{target, target + "-wal", target + "-shm"}
		if !strings.HasPrefix(target, live+".gen-") {
			old = nil // a link an operator made: its file is not ours to delete
		}
	}
	if err := besideLive(gen, live); err != nil {
		return nil, err
	}
	tmp := live + ".link-" + ulid.Make().String()
	if err := os.Symlink(filepath.Base(gen), tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, live); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	syncDir(filepath.Dir(live)) // the rename is durable once the directory is
	return old, nil
}

// besideLive checks that gen is in live's directory (the link names it by
// its base name).
func besideLive(gen, live string) error {
	if filepath.Dir(gen) != filepath.Dir(live) {
		return errors.New("projections: a generation must be in the live file's directory")
	}
	return nil
}

// PublishFirst makes live a link to gen when live does not exist yet, or
// fails with an error matching fs.ErrExist (a process made the file
// meanwhile): then Publish, under that file's write lock.
func PublishFirst(gen, live string) error {
	if err := besideLive(gen, live); err != nil {
		return err
	}
	if err := os.Symlink(filepath.Base(gen), live); err != nil {
		return err
	}
	syncDir(filepath.Dir(live))
	return nil
}

// SweepGenerations removes the files a rebuild killed before it finished
// left next to live: generations (with their -wal and -shm) the live path
// does not name, and link files not renamed yet, unchanged for olderThan
// (a rebuild at work changes its file all the time). It returns what it
// removed.
func SweepGenerations(live string, olderThan time.Duration) []string {
	dir, base := filepath.Dir(live), filepath.Base(live)
	current := ""
	if target, err := os.Readlink(live); err == nil {
		current = filepath.Base(target)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, base+".gen-") && !strings.HasPrefix(name, base+".link-") {
			continue
		}
		if current != "" && strings.TrimSuffix(strings.TrimSuffix(name, "-wal"), "-shm") == current {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < olderThan {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			removed = append(removed, name)
		}
	}
	return removed
}

// syncDir makes the directory's entries (a rename, a new file) durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// MakeDurable readies a generation for publishing: its file, written
// without fsync in Bulk mode, is synced, and each later commit syncs its
// WAL (synchronous=FULL), so that a crash after the rename cannot leave the
// live path naming a file with pages missing.
func (d *DB) MakeDurable(ctx context.Context) error {
	f, err := os.OpenFile(d.resolved, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return err
	}
	_, err = d.sql.ExecContext(ctx, "PRAGMA synchronous=FULL")
	return err
}

// RemoveLater removes files after grace: a process that was opening the
// old file at the rename has opened its -wal and -shm by then (go-sqlite3
// opens them as it connects, when it sets journal_mode=WAL), and keeps
// them open after the removal; readers open files read-only, so a pool left
// on the old file gets errors, not a new empty file, once they are gone.
func RemoveLater(files []string, grace time.Duration) {
	time.Sleep(grace)
	for _, f := range files {
		os.Remove(f)
	}
}

// readerState is a Reader's current pool, and what moving it to a newly
// published generation needs.
type readerState struct {
	cur       atomic.Pointer[readerPool]
	switching sync.Mutex
	closed    bool         // Close ran (guarded by switching)
	failedAt  atomic.Int64 // UnixNano of the last refusal of another read model
}

// readerPool is a query-only pool on one file.
type readerPool struct {
	db   *sql.DB
	file os.FileInfo
}

// moveRetry is how often a reader looks again at a moved file that is
// another read model (another instance id).
const moveRetry = 100 * time.Millisecond

// oldPoolGrace is how long a reader's previous pool stays open after a
// move, for the queries that started on it.
const oldPoolGrace = time.Minute

// db is the handle to query: the writer's connection, or a Reader's current
// pool. A Reader's pool moves to the file the path names once a rebuild
// published it (one stat a query tells, ~2 µs) and it has applied at least
// what the current one has, so that no read sees less than one before it; a
// file made again from scratch (another instance id) is not taken: the
// API serves the file it has until it restarts, as before.
func (d *DB) db() *sql.DB {
	if d.mode != Reader {
		return d.sql
	}
	p := d.reader.cur.Load()
	if !d.movedFrom(p.file) {
		return p.db
	}
	return d.move(p)
}

// move opens the moved file and takes it if it may (see db); else p. The
// queries that find the move wait for the one that makes it, so none of
// them reads the old file once the new one is taken.
func (d *DB) move(p *readerPool) *sql.DB {
	if time.Now().UnixNano()-d.reader.failedAt.Load() < int64(moveRetry) {
		return p.db
	}
	d.reader.switching.Lock()
	defer d.reader.switching.Unlock()
	if d.reader.closed {
		return p.db
	}
	if cur := d.reader.cur.Load(); cur != p {
		return cur.db // moved meanwhile
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	db, fi, err := reopenReader(d.path)
	if err != nil {
		return p.db // tried again at the next query
	}
	var had, has uint64
	var instance string
	err = p.db.QueryRowContext(ctx, appliedQuery).Scan(&had)
	if err == nil {
		err = db.QueryRowContext(ctx, appliedQuery).Scan(&has)
	}
	if err == nil {
		instance, err = loadInstanceID(ctx, db)
	}
	if err != nil || has < had || instance != d.instance {
		db.Close()
		if err == nil && instance != d.instance {
			// Another read model (made again from scratch): not taken,
			// looked at again after moveRetry.
			d.reader.failedAt.Store(time.Now().UnixNano())
		}
		// Behind, or an error: tried again at the next query. A rebuild
		// publishes a file that has applied at least what the old one had,
		// so this lasts until the projector has caught it up, if at all.
		return p.db
	}
	d.reader.cur.Store(&readerPool{db: db, file: fi})
	time.AfterFunc(oldPoolGrace, func() { p.db.Close() })
	return db
}

// appliedQuery reads the applied sequence (AppliedSeq).
const appliedQuery = "SELECT last_seq FROM projector_state WHERE id = 1"

// Moved reports whether the read model path now names another file than
// the one d has open: a rebuild published a new generation, or the file
// was deleted and made again. A path that names no file (deleted, not made
// again yet) is not a move: d keeps serving the file it has open.
func (d *DB) Moved() bool {
	if d.mode == Reader {
		return d.movedFrom(d.reader.cur.Load().file)
	}
	return d.movedFrom(d.file)
}

// movedFrom reports whether the read model path names a file other than
// file (and names one at all).
func (d *DB) movedFrom(file os.FileInfo) bool {
	fi, err := os.Stat(d.path)
	return err == nil && !os.SameFile(fi, file)
}

// ErrMoved is returned by a write when the read model path names another
// file than the one the writer has open (a rebuild published a new
// generation): the writer must open the path again. It is checked once the
// write lock is held, and a rebuild publishes while holding that lock
// (LockWrites), so no write lands in the old file after the publish.
var ErrMoved = errors.New("projections: the read model path names a new file (a rebuild published it); open it again")

// beginWrite begins a write transaction (BEGIN IMMEDIATE: it holds the
// write lock), or ErrMoved.
func (d *DB) beginWrite(ctx context.Context) (*sql.Tx, error) {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	if d.Moved() {
		tx.Rollback()
		return nil, ErrMoved
	}
	return tx, nil
}

// LockWrites takes the write lock of d (the live read model) and returns
// its applied sequence: until unlock, the projector commits nothing to it,
// so a rebuild that has applied at least that much can publish its
// generation without a read seeing less than before.
func (d *DB) LockWrites(ctx context.Context) (applied uint64, unlock func(), err error) {
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return 0, nil, err
	}
	tx, err := conn.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		conn.Close()
		return 0, nil, err
	}
	if err := tx.QueryRowContext(ctx, appliedQuery).Scan(&applied); err != nil {
		tx.Rollback()
		conn.Close()
		return 0, nil, err
	}
	return applied, func() { tx.Rollback(); conn.Close() }, nil
}

// reopenReader opens the query-only pool on path (resolved), for a reader
// whose file moved.
func reopenReader(path string) (*sql.DB, os.FileInfo, error) {
	file, err := resolve(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return nil, nil, err
	}
	db, err := openReaderPool(file)
	return db, fi, err
}
