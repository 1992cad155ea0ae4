// Package projections owns the SQLite read model: its schema (embedded SQL
// migrations), the application of events to it with the domain fold, and the
// queries the API answers reads with. No other package imports SQLite.
package projections

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3" // the SQLite driver

	"github.com/mcpvault/vault/audit"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Mode says how a DB is opened.
type Mode int

// The modes of Open.
const (
	// Writer is the projector: one connection, WAL, secure_delete.
	Writer Mode = iota
	// Reader is the API: a pool of query-only connections.
	Reader
	// Bulk is a rebuild into a fresh file, which is only swapped in once
	// complete: no journal, synchronous=OFF, an exclusive lock, a large page
	// cache, and secondary indexes dropped at Open and built at Close.
	Bulk
)

// DB is a handle on the read model file.
type DB struct {
	sql  *sql.DB // the writer's connection, or the reader's first pool
	path string  // the read model path (the live path; see generation.go)
	mode Mode
	// file is the file d has open (path, or the generation it links to).
	file os.FileInfo
	// resolved is the file's path (path, or the generation it links to).
	resolved string
	// reader is a Reader's current pool: a new one when the file moved
	// (DB.db).
	reader readerState
	// instance is the file's instance id (see InstanceID).
	instance string
	// bulkIndexes are the secondary indexes a Bulk DB dropped at Open and
	// creates again at Close (an index built once is cheaper than one
	// maintained row by row).
	bulkIndexes []string

	// audit verifies signatures of held events on release, except unsigned
	// ones up to unsignedUntil (projections/custody.go).
	audit         *audit.Keyring
	unsignedUntil uint64

	mu    sync.Mutex
	stmts map[string]*sql.Stmt // prepared statements of the writer
}

// stmt returns the statement prepared for query at Open (a writer has one
// connection, held by the transaction, so nothing can be prepared later).
func (d *DB) stmt(query string) (*sql.Stmt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.stmts[query]; ok {
		return st, nil
	}
	return nil, fmt.Errorf("projections: statement not prepared: %.40s", query)
}

// prepare prepares the statements Apply uses.
func (d *DB) prepare(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stmts = map[string]*sql.Stmt{}
	for _, q := range applyStatements {
		st, err := d.sql.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		d.stmts[q] = st
	}
	return nil
}

// Open opens (creating and migrating when needed) the read model at path.
func Open(ctx context.Context, path string, mode Mode) (*DB, error) {
	// When the API and the projector open one file at the same moment, a
	// step that SQLite does not wait for (switching a connection to WAL,
	// or a pragma during the other's migration) fails at once with
	// SQLITE_BUSY: open again, for up to about two seconds.
	for i := 0; ; i++ {
		d, err := open(ctx, path, mode)
		var se sqlite3.Error
		if err == nil || i >= 100 || !errors.As(err, &se) || (se.Code != sqlite3.ErrBusy && se.Code != sqlite3.ErrLocked) {
			return d, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dsnParams are the connection parameters of a mode.
func dsnParams(mode Mode) url.Values {
	q := url.Values{}
	q.Set("_busy_timeout", "10000")
	q.Set("_journal_mode", "WAL")
	q.Set("_secure_delete", "on")
	q.Set("_txlock", "immediate")
	switch mode {
	case Writer:
		q.Set("_synchronous", "NORMAL")
	case Bulk:
		// A fresh file that is used only once complete: no journal, no
		// fsync, one connection holding the lock.
		q.Set("_synchronous", "OFF")
		q.Set("_journal_mode", "OFF")
		q.Set("_locking_mode", "EXCLUSIVE")
	}
	return q
}

// openReaderPool opens a Reader's query-only pool on file.
func openReaderPool(file string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", "file:"+file+"?"+readerDSN().Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	return db, nil
}

// readerDSN are the parameters of a Reader's query-only pool.
func readerDSN() url.Values {
	q := dsnParams(Reader)
	q.Set("_query_only", "on")
	// Read-only: a pool left on a deleted generation gets errors, not a new
	// empty file (generation.go).
	q.Set("mode", "ro")
	q.Del("_txlock")
	// Each read connection keeps its prepared statements (reads repeat a
	// few dozen query texts).
	q.Set("_stmt_cache_size", "64")
	return q
}

func open(ctx context.Context, path string, mode Mode) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// The file path names, or the generation it links to: every connection
	// of this DB opens that one file, even if a rebuild publishes another
	// meanwhile (Moved tells).
	file, err := resolve(path)
	if err != nil {
		return nil, err
	}
	// Create the file owner-only before SQLite does (0644); its -wal and -shm
	// files take the database file's permissions.
	if f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite3", "file:"+file+"?"+dsnParams(mode).Encode())
	if err != nil {
		return nil, err
	}
	d := &DB{sql: db, path: path, mode: mode, file: fi, resolved: file}
	if err := d.migrateRetry(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if mode == Reader {
		db.Close()
		if db, err = openReaderPool(file); err != nil {
			return nil, err
		}
		d.sql = db
		d.reader.cur.Store(&readerPool{db: db, file: fi})
	} else {
		db.SetMaxOpenConns(1)
	}
	if d.instance, err = loadInstanceID(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	if mode == Bulk {
		// A large page cache (256 MiB at most, allocated as used) and
		// temporary structures in memory.
		if _, err := db.ExecContext(ctx, "PRAGMA cache_size=-262144; PRAGMA temp_store=MEMORY"); err != nil {
			db.Close()
			return nil, err
		}
		if err := d.dropIndexes(ctx); err != nil {
			db.Close()
			return nil, err
		}
	}
	if mode != Reader {
		if err := d.prepare(ctx); err != nil {
			db.Close()
			return nil, err
		}
	}
	if mode == Writer {
		if _, err := d.renderMissingDocs(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("projections: rendering stored objects: %w", err)
		}
	}
	return d, nil
}

// Path is the file the DB was opened from.
func (d *DB) Path() string { return d.path }

// Close closes the DB; a Bulk DB is checkpointed first.
func (d *DB) Close() error {
	d.mu.Lock()
	for _, st := range d.stmts {
		st.Close()
	}
	d.stmts = nil
	d.mu.Unlock()
	if d.mode == Bulk {
		for _, ddl := range d.bulkIndexes {
			if _, err := d.sql.Exec(ddl); err != nil {
				d.sql.Close()
				return fmt.Errorf("projections: recreate index: %w", err)
			}
		}
		d.bulkIndexes = nil
		if _, err := d.sql.Exec("PRAGMA journal_mode=WAL"); err != nil {
			d.sql.Close()
			return err
		}
	}
	if d.mode == Reader {
		d.reader.switching.Lock() // not while a move opens a pool
		defer d.reader.switching.Unlock()
		d.reader.closed = true
		return d.reader.cur.Load().db.Close()
	}
	return d.sql.Close()
}

// dropIndexes drops every secondary index of a Bulk DB, remembering its DDL
// for Close.
func (d *DB) dropIndexes(ctx context.Context) error {
	rows, err := d.sql.QueryContext(ctx, "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
	if err != nil {
		return err
	}
	var names []string
	for rows.Next() {
		var name, ddl string
		if err := rows.Scan(&name, &ddl); err != nil {
			rows.Close()
			return err
		}
		names = append(names, name)
		d.bulkIndexes = append(d.bulkIndexes, ddl)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, n := range names {
		if _, err := d.sql.ExecContext(ctx, `DROP INDEX "`+n+`"`); err != nil {
			return err
		}
	}
	return nil
}

// SQL exposes the handle for tests and benchmarks in this module.
func (d *DB) SQL() *sql.DB { return d.db() }

// migrateRetry runs migrate, retrying while the file is busy: when two
// processes open a new file at once (vault run starts the API and the
// projector together), switching it to WAL fails at once with SQLITE_BUSY,
// without waiting for the busy timeout.
func (d *DB) migrateRetry(ctx context.Context) error {
	for i := 0; ; i++ {
		err := d.migrate(ctx)
		var se sqlite3.Error
		if err == nil || i >= 100 || !errors.As(err, &se) || se.Code != sqlite3.ErrBusy {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// migrate applies the embedded migrations not yet applied, in name order,
// each in its own transaction, and records each by name in
// schema_migrations: two migrations written on different branches may sort
// in any order without one being taken for the other. Files made before the
// table existed recorded only a count in user_version; their first
// user_version migrations (in name order, as they were applied) are recorded
// by name on the first open. user_version still counts the applied ones.
func (d *DB) migrate(ctx context.Context) error { return d.migrateFrom(ctx, migrations) }

func (d *DB) migrateFrom(ctx context.Context, fsys fs.FS) error {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	applied, err := recordedMigrations(ctx, conn, names)
	if err != nil {
		return err
	}
	for _, name := range names {
		if applied[name] {
			continue
		}
		if err := applyMigration(ctx, conn, fsys, name); err != nil {
			return err
		}
	}
	return nil
}

// recordedMigrations returns the migrations recorded as applied, creating
// the record (and filling it from a legacy user_version count) if needed.
func recordedMigrations(ctx context.Context, conn *sql.Conn, names []string) (map[string]bool, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name TEXT PRIMARY KEY,
		applied_at TEXT NOT NULL)`); err != nil {
		return nil, err
	}
	var recorded, version int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&recorded); err != nil {
		return nil, err
	}
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return nil, err
	}
	if recorded == 0 && version > 0 {
		if version > len(names) {
			return nil, fmt.Errorf("projections: the read model has %d migrations applied, this build knows %d: it was made by a newer build", version, len(names))
		}
		for _, name := range names[:version] {
			if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (name, applied_at) VALUES (?, 'before schema_migrations')", path.Base(name)); err != nil {
				return nil, err
			}
		}
	}
	rows, err := tx.QueryContext(ctx, "SELECT name FROM schema_migrations")
	if err != nil {
		return nil, err
	}
	applied := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		applied["migrations/"+n] = true
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	return applied, tx.Commit()
}

// migrationSteps are the Go parts of migrations, run after their SQL in the
// same transaction: what SQL cannot compute (a credential's API object).
var migrationSteps = map[string]func(context.Context, *sql.Tx) error{
	"0006_credential_doc.sql": renderCredentialDocs,
}

// applyMigration runs one migration and records it, in one transaction.
func applyMigration(ctx context.Context, conn *sql.Conn, fsys fs.FS, name string) error {
	body, err := fs.ReadFile(fsys, name)
	if err != nil {
		return err
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var done int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE name = ?", path.Base(name)).Scan(&done); err != nil {
		return err
	}
	if done > 0 { // another process applied it meanwhile
		return nil
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("projections: migration %s: %w", path.Base(name), err)
	}
	if step := migrationSteps[path.Base(name)]; step != nil {
		if err := step(ctx, tx); err != nil {
			return fmt.Errorf("projections: migration %s: %w", path.Base(name), err)
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
		path.Base(name), time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(n)); err != nil {
		return err
	}
	return tx.Commit()
}

// AppliedSeq is the stream sequence of the last event the read model has
// applied (eventstore.Store.LastSeq is the newest one in the stream).
func (d *DB) AppliedSeq(ctx context.Context) (uint64, error) {
	var seq uint64
	err := d.db().QueryRowContext(ctx, appliedQuery).Scan(&seq)
	return seq, err
}

// ErrNotFound is returned by the queries for an unknown or foreign id.
var ErrNotFound = errors.New("projections: not found")
