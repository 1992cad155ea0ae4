package projections

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"strconv"
	"testing"
	"testing/fstest"
)

// A read model made by a build whose migrations were 0001 and
// 0003_projector only (user_version 2) gets the reads migration when this
// build opens it: the partial index of live credentials exists and the
// instance id is kept.
func TestReadsMigrationAppliesToFilesOfTheProjectorBuild(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rm.sqlite")
	raw, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"migrations/0001_init.sql", "migrations/0003_projector.sql"} {
		body, err := migrations.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := raw.Exec("PRAGMA user_version = " + strconv.Itoa(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	var before string
	if err := raw.QueryRow("SELECT instance_id FROM read_model_instance").Scan(&before); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	d, err := Open(ctx, path, Writer)
	if err != nil {
		t.Fatalf("opening a file of the projector build: %v", err)
	}
	defer d.Close()
	var n int
	if err := d.sql.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'credentials_live_by_server'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("partial index after migration: %d %v", n, err)
	}
	if d.InstanceID() != before || before == "" {
		t.Fatalf("instance id %q, the file had %q", d.InstanceID(), before)
	}
}

// Migrations are recorded by name: a migration that sorts before one
// already applied (two branches adding 0006_a and 0005_b, merged after a
// file got 0006_a) is still applied, once, and a file whose migrations were
// counted in user_version only is taken over without applying any again.
func TestMigrationsRecordedByName(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rm.sqlite")
	d, err := Open(ctx, path, Writer)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	names := func() []string {
		rows, err := d.sql.Query("SELECT name FROM schema_migrations ORDER BY name")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var n string
			rows.Scan(&n)
			out = append(out, n)
		}
		return out
	}
	base, _ := fs.Glob(migrations, "migrations/*.sql")
	if got := names(); len(got) != len(base) {
		t.Fatalf("recorded %v, embedded %v", got, base)
	}
	withExtra := func(extra map[string]string) fstest.MapFS {
		m := fstest.MapFS{}
		for _, n := range base {
			b, _ := migrations.ReadFile(n)
			m[n] = &fstest.MapFile{Data: b}
		}
		for n, sqlText := range extra {
			m["migrations/"+n] = &fstest.MapFile{Data: []byte(sqlText)}
		}
		return m
	}
	if err := d.migrateFrom(ctx, withExtra(map[string]string{"0099_later.sql": "CREATE TABLE later (x);"})); err != nil {
		t.Fatal(err)
	}
	// 0098 sorts before 0099, which this file already has: a count would skip it.
	if err := d.migrateFrom(ctx, withExtra(map[string]string{
		"0099_later.sql":   "CREATE TABLE later (x);",
		"0098_earlier.sql": "CREATE TABLE earlier (x);",
	})); err != nil {
		t.Fatalf("a migration sorting before an applied one: %v", err)
	}
	var n int
	if err := d.sql.QueryRow("SELECT count(*) FROM sqlite_master WHERE name IN ('later', 'earlier')").Scan(&n); err != nil || n != 2 {
		t.Fatalf("tables of both migrations: %d %v", n, err)
	}
	if got := names(); len(got) != len(base)+2 {
		t.Fatalf("recorded %v", got)
	}
	var version int
	d.sql.QueryRow("PRAGMA user_version").Scan(&version)
	if version != len(base)+2 {
		t.Fatalf("user_version %d, want %d", version, len(base)+2)
	}

	// A legacy file: migrations counted in user_version, no record table.
	if _, err := d.sql.Exec("DROP TABLE schema_migrations"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.sql.Exec("PRAGMA user_version = " + strconv.Itoa(len(base))); err != nil {
		t.Fatal(err)
	}
	if err := d.migrate(ctx); err != nil { // would fail if any ran again (CREATE TABLE exists)
		t.Fatalf("taking over a counted file: %v", err)
	}
	if got := names(); len(got) != len(base) {
		t.Fatalf("recorded %v after taking over", got)
	}
}
