package eventstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mcpvault/vault/eventstore"
)

func MustStore(tb testing.TB) *eventstore.Store {
	tb.Helper()
	srv, err := eventstore.StartEmbedded(eventstore.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	nc, err := eventstore.Connect(srv.ClientURL(), "test")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	st, err := eventstore.Open(context.Background(), nc, eventstore.Config{Stream: "VAULT"})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// The consistency boundary of a server is the wildcard "vault.<srv>.>": a
// write that saw an older sequence anywhere under it must be refused.
func TestAppendExpectsLastSequenceOfServerTree(t *testing.T) {
	st := MustStore(t)
	ctx := context.Background()
	tree := "vault.s1.>"
	seq1, err := st.Append(ctx, "vault.s1.server", []byte("1"), "m1", tree, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "vault.s1.server", []byte("x"), "m2", tree, 0); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("second create on same tree: got %v, want conflict", err)
	}
	seq2, err := st.Append(ctx, "vault.s1.credential.c1", []byte("2"), "m3", tree, seq1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "vault.s1.server", []byte("3"), "m4", tree, seq1); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("stale write after a credential event: got %v, want conflict", err)
	}
	if _, err := st.Append(ctx, "vault.s2.server", []byte("4"), "m5", "vault.s2.>", 0); err != nil {
		t.Fatalf("another server is independent: %v", err)
	}
	if _, err := st.Append(ctx, "vault.s1.server", []byte("5"), "m6", tree, seq2); err != nil {
		t.Fatal(err)
	}
	// A retried publish with the same message id is stored once.
	a, _ := st.AppendUnchecked(ctx, "vault.s3.server", []byte("6"), "dup")
	b, _ := st.AppendUnchecked(ctx, "vault.s3.server", []byte("6"), "dup")
	if a != b {
		t.Fatalf("duplicate publish stored twice: %d, %d", a, b)
	}
}

func TestDestroyKey(t *testing.T) {
	st := MustStore(t)
	ctx := context.Background()
	if err := st.PutKey(ctx, "c1", []byte("wrapped")); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetKey(ctx, "c1")
	if err != nil || string(got) != "wrapped" {
		t.Fatalf("GetKey = %q, %v", got, err)
	}
	if err := st.DestroyKey(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetKey(ctx, "c1"); !errors.Is(err, eventstore.ErrKeyNotFound) {
		t.Fatalf("after destroy: %v", err)
	}
	if err := st.DestroyKey(ctx, "c1"); err != nil {
		t.Fatalf("destroy twice: %v", err)
	}
}
