package eventstore_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/natsserver"
)

func MustStore(tb testing.TB) *eventstore.Store {
	tb.Helper()
	srv, err := natsserver.Start(natsserver.Options{Listen: "127.0.0.1:0", StoreDir: tb.TempDir()})
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

// Group commit keeps every append's own guarantees: concurrent appends to
// different trees all succeed once, a stale expectation fails only its own
// append, and a retried message id is stored once.
func TestGroupCommit(t *testing.T) {
	st := MustStore(t)
	st.EnableGroupCommit(2)
	ctx := context.Background()
	const n = 200
	type res struct {
		seq uint64
		err error
	}
	out := make(chan res, 2*n)
	for i := 0; i < n; i++ {
		go func() {
			srv := "g" + strconv.Itoa(i)
			seq, err := st.Append(ctx, "vault."+srv+".server", []byte("x"), "msg-"+srv, "vault."+srv+".>", 0)
			out <- res{seq, err}
			// A second create on the same tree must conflict.
			_, err = st.Append(ctx, "vault."+srv+".server", []byte("y"), "msg2-"+srv, "vault."+srv+".>", 0)
			out <- res{0, err}
		}()
	}
	seqs := map[uint64]bool{}
	conflicts := 0
	for i := 0; i < 2*n; i++ {
		r := <-out
		switch {
		case errors.Is(r.err, eventstore.ErrConflict):
			conflicts++
		case r.err != nil:
			t.Fatal(r.err)
		default:
			if seqs[r.seq] {
				t.Fatalf("sequence %d given twice", r.seq)
			}
			seqs[r.seq] = true
		}
	}
	if len(seqs) != n || conflicts != n {
		t.Fatalf("%d stored, %d conflicts; want %d and %d", len(seqs), conflicts, n, n)
	}
	last, _ := st.LastSeq(ctx)
	if last != n {
		t.Fatalf("stream holds %d messages, want %d", last, n)
	}
	gs := st.GroupStats()
	t.Logf("group commit: %+v", gs)
	if gs.Batches == 0 || gs.Batched < 2*gs.Batches {
		t.Fatalf("no atomic batch was committed: %+v", gs)
	}
	if _, err := st.Append(ctx, "vault.g0.server", []byte("x"), "msg-g0", "", 0); !errors.Is(err, eventstore.ErrDuplicate) {
		t.Fatalf("retried msg id: %v", err)
	}
}
