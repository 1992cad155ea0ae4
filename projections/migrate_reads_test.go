package projections

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
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
