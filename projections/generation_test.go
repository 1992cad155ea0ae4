package projections_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpvault/vault/projections"
)

// genOpen opens path in mode, closed at the end of the test.
func genOpen(tb testing.TB, path string, mode projections.Mode) *projections.DB {
	tb.Helper()
	d, err := projections.Open(context.Background(), path, mode)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

func genApplied(tb testing.TB, d *projections.DB) uint64 {
	tb.Helper()
	seq, err := d.AppliedSeq(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return seq
}

// genPublish publishes gen over live under live's write lock, as a rebuild
// does, and checks what it returns as the old generation's files.
func genPublish(tb testing.TB, live *projections.DB, gen *projections.DB, wantOld []string) {
	tb.Helper()
	ctx := context.Background()
	if err := gen.SetInstanceID(ctx, live.InstanceID()); err != nil {
		tb.Fatal(err)
	}
	_, unlock, err := live.LockWrites(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	old, err := projections.Publish(gen.Path(), live.Path())
	unlock()
	if err != nil {
		tb.Fatal(err)
	}
	if len(old) != len(wantOld) {
		tb.Fatalf("old generation files %v, want %v", old, wantOld)
	}
	for i := range old {
		if old[i] != wantOld[i] {
			tb.Fatalf("old generation files %v, want %v", old, wantOld)
		}
	}
}

// A rebuild publishes a generation by renaming a link over the live path:
// the writer that had the old file open is refused its next write
// (ErrMoved) and opening the path again writes the new file; a reader moves
// to the new file at its next query, never to one that has applied less or
// is another read model (another instance id); the sqlite3 files of each
// generation are named after it; a second publish replaces the first.
func TestPublishedGenerationIsTakenByReadersAndWriters(t *testing.T) {
	ctx := context.Background()
	recs := apStream()
	dir := t.TempDir()
	livePath := filepath.Join(dir, "readmodel.sqlite")
	writer := genOpen(t, livePath, projections.Writer)
	apApply(t, writer, recs[:8])
	reader := genOpen(t, livePath, projections.Reader)
	if got := genApplied(t, reader); got != 8 {
		t.Fatalf("reader applied %d, want 8", got)
	}

	// A generation behind the live file is published (a rebuild never does
	// that; a reader must not go back in time anyway).
	behind := genOpen(t, projections.GenerationPath(livePath), projections.Writer)
	apApply(t, behind, recs[:5])
	genPublish(t, writer, behind, []string{livePath + "-wal", livePath + "-shm"})
	if target, err := os.Readlink(livePath); err != nil || target != filepath.Base(behind.Path()) {
		t.Fatalf("live path links to %q (%v), want %q", target, err, filepath.Base(behind.Path()))
	}
	if !writer.Moved() || !reader.Moved() || behind.Moved() {
		t.Fatalf("Moved: writer %v reader %v (want true), the generation itself %v (want false)", writer.Moved(), reader.Moved(), behind.Moved())
	}
	if _, err := writer.Apply(ctx, apMsgs(t, recs[8:10])); !errors.Is(err, projections.ErrMoved) {
		t.Fatalf("write to the old file after the publish: %v, want ErrMoved", err)
	}
	if got := genApplied(t, reader); got != 8 {
		t.Fatalf("reader applied %d after a generation at 5 was published, want 8 (the old file)", got)
	}

	// The projector opens the path again and catches the new file up: the
	// reader moves to it at its next query once it has applied as much
	// (after moveRetry since its last try).
	writer2 := genOpen(t, livePath, projections.Writer)
	if writer2.Path() != livePath || writer2.InstanceID() != writer.InstanceID() {
		t.Fatalf("reopened writer: path %q instance %q, want %q %q", writer2.Path(), writer2.InstanceID(), livePath, writer.InstanceID())
	}
	apApply(t, writer2, recs[5:12])
	if got := genApplied(t, behind); got != 12 {
		t.Fatalf("the writer opened through the link wrote elsewhere: the generation applied %d, want 12", got)
	}
	waitApplied(t, reader, 12)
	if reader.Moved() {
		t.Fatal("the reader still reports a move after taking the new file")
	}
	for _, f := range []string{behind.Path() + "-wal", behind.Path() + "-shm"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("the generation's journal is not named after it: %v", err)
		}
	}

	// A second publish replaces the generation; its old files are the
	// first generation and its -wal and -shm.
	next := genOpen(t, projections.GenerationPath(livePath), projections.Writer)
	apApply(t, next, recs)
	genPublish(t, writer2, next, []string{behind.Path(), behind.Path() + "-wal", behind.Path() + "-shm"})
	waitApplied(t, reader, uint64(len(recs)))
	if got, want := apDump(t, reader), apDump(t, next); got != want {
		t.Fatalf("the reader reads\n%s\nnot the published generation\n%s", got, want)
	}

	// Another read model (a file made again from scratch has another
	// instance id) is not taken, even when it has applied more.
	other := genOpen(t, projections.GenerationPath(livePath), projections.Writer)
	apApply(t, other, recs)
	_, unlock, err := writer2.LockWrites(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := projections.Publish(other.Path(), livePath); err != nil {
		t.Fatal(err)
	}
	unlock()
	time.Sleep(150 * time.Millisecond) // past moveRetry of any earlier try
	if got := genApplied(t, reader); got != uint64(len(recs)) || !reader.Moved() {
		t.Fatalf("reader after a foreign file was published: applied %d, moved %v; want it to stay on the generation before", got, reader.Moved())
	}
	if err := os.Remove(next.Path()); err != nil { // gone from the directory, open in the reader
		t.Fatal(err)
	}
	if got := genApplied(t, reader); got != uint64(len(recs)) {
		t.Fatalf("reader after its file was removed: applied %d", got)
	}

	// A link an operator made to a file of their own is replaced, and that
	// file is not given for deletion.
	own := filepath.Join(dir, "elsewhere.sqlite")
	genOpen(t, own, projections.Writer)
	if err := os.Symlink(own, livePath+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(livePath+".tmp", livePath); err != nil {
		t.Fatal(err)
	}
	if old, err := projections.Publish(other.Path(), livePath); err != nil || len(old) != 0 {
		t.Fatalf("publish over an operator's link: old files %v (%v), want none", old, err)
	}
}

// waitApplied polls a reader until it has applied seq: a reader retries a
// move it could not make after moveRetry (100 ms).
func waitApplied(tb testing.TB, d *projections.DB, seq uint64) {
	tb.Helper()
	for range 50 {
		if genApplied(tb, d) >= seq {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("reader applied %d, want %d", genApplied(tb, d), seq)
}
