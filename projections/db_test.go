package projections_test

import (
	"context"
	"os"
	"path/filepath"
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
