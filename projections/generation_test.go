package projections_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

// The projector's write that waits for the write lock a rebuild holds while
// it publishes is refused once the lock is released (ErrMoved), and writes
// nothing to the old file: no write lands in a file the live path no longer
// names, so the projector never announces a sequence only the old file has.
func TestWriteWaitingForThePublishIsRefused(t *testing.T) {
	ctx := context.Background()
	recs := apStream()
	livePath := filepath.Join(t.TempDir(), "readmodel.sqlite")
	projector := genOpen(t, livePath, projections.Writer)
	apApply(t, projector, recs[:6])
	rebuild := genOpen(t, livePath, projections.Writer) // the rebuild's handle on the live file
	gen := genOpen(t, projections.GenerationPath(livePath), projections.Writer)
	apApply(t, gen, recs[:6])
	if err := gen.SetInstanceID(ctx, rebuild.InstanceID()); err != nil {
		t.Fatal(err)
	}
	applied, unlock, err := rebuild.LockWrites(ctx)
	if err != nil || applied != 6 {
		t.Fatalf("LockWrites: applied %d, %v", applied, err)
	}
	msgs := apMsgs(t, recs[6:9])
	done := make(chan error, 1)
	go func() {
		_, err := projector.Apply(ctx, msgs)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a write went through while the rebuild held the lock: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := projections.Publish(gen.Path(), livePath); err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := <-done; !errors.Is(err, projections.ErrMoved) {
		t.Fatalf("the write waiting for the lock: %v, want ErrMoved", err)
	}
	if got := genApplied(t, projector); got != 6 {
		t.Fatalf("the old file applied %d after the publish, want 6", got)
	}
}

// The first publish makes the link only where no file is; a file made
// meanwhile is kept (fs.ErrExist), to be published over under its lock.
func TestPublishFirstKeepsAFileMadeMeanwhile(t *testing.T) {
	dir := t.TempDir()
	livePath := filepath.Join(dir, "readmodel.sqlite")
	gen := genOpen(t, projections.GenerationPath(livePath), projections.Writer)
	if err := projections.PublishFirst(gen.Path(), livePath); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(livePath); err != nil || target != filepath.Base(gen.Path()) {
		t.Fatalf("live path links to %q (%v)", target, err)
	}
	other := filepath.Join(dir, "other.sqlite")
	genOpen(t, other, projections.Writer)
	if err := projections.PublishFirst(gen.Path(), other); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("PublishFirst over an existing file: %v, want fs.ErrExist", err)
	}
	if fi, err := os.Lstat(other); err != nil || fi.Mode()&os.ModeSymlink != 0 {
		t.Fatalf("the existing file was replaced: %v %v", fi, err)
	}
}

// A rebuild removes what an earlier one killed before finishing left: old
// unlinked generations and link files, not the generation the live path
// names, not a file changed lately (a rebuild at work), not other files.
func TestSweepGenerationsRemovesOnlyLeftovers(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "readmodel.sqlite")
	names := map[string]bool{ // name: old
		"readmodel.sqlite.gen-A": true, "readmodel.sqlite.gen-A-wal": true, "readmodel.sqlite.gen-A-shm": true,
		"readmodel.sqlite.gen-B": true, "readmodel.sqlite.gen-B-wal": true, // the current one
		"readmodel.sqlite.gen-C":    false, // a rebuild at work
		"readmodel.sqlite.link-X":   true,
		"readmodel.sqlite.other":    true,
		"unrelated.sqlite.gen-Z":    true,
		"readmodel.sqlite-wal.keep": true,
	}
	for n, old := range names {
		f := filepath.Join(dir, n)
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if old {
			past := time.Now().Add(-2 * time.Hour)
			os.Chtimes(f, past, past)
		}
	}
	if err := os.Symlink("readmodel.sqlite.gen-B", live); err != nil {
		t.Fatal(err)
	}
	removed := projections.SweepGenerations(live, time.Hour)
	slices.Sort(removed)
	want := []string{"readmodel.sqlite.gen-A", "readmodel.sqlite.gen-A-shm", "readmodel.sqlite.gen-A-wal", "readmodel.sqlite.link-X"}
	if !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	for _, n := range want {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s still there: %v", n, err)
		}
	}
}
