package projections_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpvault/vault/projections"
)

// The read model holds ciphertext and owners' metadata: owner-only files.
func TestReadModelFilesAreOwnerOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rm.sqlite")
	db, err := projections.Open(context.Background(), path, projections.Writer)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Apply(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), st.Mode().Perm())
		}
	}
}

// A Bulk file is written without secondary indexes and gets every one of
// them back when it is closed: the rebuilt file has the live file's schema.
func TestBulkBuildsIndexesAtClose(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	schema := func(path string) string {
		t.Helper()
		db, err := projections.Open(ctx, path, projections.Writer)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.SQL().QueryContext(ctx, "SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out string
		for rows.Next() {
			var typ, name, ddl string
			if err := rows.Scan(&typ, &name, &ddl); err != nil {
				t.Fatal(err)
			}
			out += typ + " " + name + " " + ddl + "\n"
		}
		return out
	}
	bulk := filepath.Join(dir, "bulk.sqlite")
	b, err := projections.Open(ctx, bulk, projections.Bulk)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.SQL().QueryRow("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d secondary indexes while bulk loading: %v", n, err)
	}
	recs := apStream()
	if _, err := b.Apply(ctx, apMsgs(t, recs)); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	want := schema(filepath.Join(dir, "live.sqlite"))
	if got := schema(bulk); got != want || !strings.Contains(got, "index credentials_by_server") {
		t.Fatalf("bulk file schema\n%s\nwant\n%s", got, want)
	}
	d, err := projections.Open(ctx, bulk, projections.Writer)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	apCheckFinal(t, d)
	var check string
	if err := d.SQL().QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check %q %v", check, err)
	}
}
