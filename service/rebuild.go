package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
)

// Rebuild replays the whole event stream into a new read model file (a
// generation, next to the live one) while the old one keeps serving, then
// makes the live path name it in one rename (projections.Publish).
type Rebuild struct {
	NATSURL string
	// NATSAuth is the rebuild's NATS identity (role projector unless set).
	NATSAuth      eventstore.Auth
	Stream        string
	Replicas      int // stream replicas when the vault creates them (default 1)
	ReadModelPath string
	Log           *slog.Logger
	// Progress receives a progress bar when it is a terminal, else plain
	// log lines every few seconds.
	Progress io.Writer
	// BatchSize is the number of events per transaction (default
	// DefaultBatchSize, as the projector catching up).
	BatchSize int
	// AuditKeys verifies every event's signature as the projector does,
	// except unsigned ones up to UnsignedUntil.
	AuditKeys     *audit.Keyring
	UnsignedUntil uint64
}

// oldGenerationGrace is how long the files of the generation a rebuild
// replaced stay after the swap: a process that was opening the old file at
// the rename has opened its -wal and -shm by then, and keeps them open.
const oldGenerationGrace = 2 * time.Second

// Run rebuilds and swaps.
func (r *Rebuild) Run(ctx context.Context) error {
	start := time.Now()
	// A replay allocates short-lived decoded batches at a high rate and holds
	// little (batches of BatchSize events): collect garbage a quarter as
	// often as by default while it runs (the profiles showed ~10 % of its
	// CPU in the collector).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	// A rebuild is a one-shot command: without NATS it fails within seconds
	// with a clear message instead of retrying for ever.
	auth := projectorAuth(r.NATSAuth, r.Log)
	auth.FailFast = true
	nc, err := eventstore.Dial(r.NATSURL, "vault-rebuild", auth)
	if err != nil {
		return err
	}
	defer nc.Close()
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := eventstore.Bind(bctx, nc, eventstore.Config{Stream: r.Stream, Replicas: r.Replicas})
	cancel()
	if err != nil {
		return fmt.Errorf("cannot open the event stream %s at %s: %w", r.Stream, eventstore.Redact(r.NATSURL), err)
	}
	if gone := projections.SweepGenerations(r.ReadModelPath, time.Hour); len(gone) > 0 {
		r.Log.Info("removed the files of an earlier rebuild that did not finish", "files", gone)
	}
	gen := projections.GenerationPath(r.ReadModelPath)
	published := false
	defer func() {
		if !published {
			removeDB(gen)
		}
	}()
	n, err := r.build(ctx, st, gen)
	if err != nil {
		return err
	}
	// Reopened as a writer: the bulk file was completed (indexes built) when
	// build closed it.
	swapStart := time.Now()
	db, err := projections.Open(ctx, gen, projections.Writer)
	if err != nil {
		return err
	}
	defer db.Close()
	db.VerifyWith(r.AuditKeys, r.UnsignedUntil)
	if err := db.MakeDurable(ctx); err != nil {
		return err
	}
	old, final, err := r.publish(ctx, st, db, n, &published)
	if err != nil {
		return err
	}
	caught := final - n
	r.Log.Info("read model rebuilt and swapped in", "events", final, "path", r.ReadModelPath,
		"file", gen, "seconds", time.Since(start).Seconds(), "swap_seconds", time.Since(swapStart).Seconds(),
		"caught_up_events", caught)
	// The old generation's files go once no process can still be opening
	// them (projections.RemoveLater).
	projections.RemoveLater(old, oldGenerationGrace)
	return nil
}

// publish makes the live path name the rebuilt file gen (projections.Publish)
// once gen has applied at least what the live file has: first catching up
// with the events the live projector applied meanwhile, then, within a batch
// of it, under the live file's write lock, so that no read served from the
// live path sees less after the swap than before it. have is what gen has
// applied. It sets *published as soon as the live path names gen, and
// returns the old generation's files and what gen has applied then.
func (r *Rebuild) publish(ctx context.Context, st *eventstore.Store, gen *projections.DB, have uint64, published *bool) ([]string, uint64, error) {
	if _, err := os.Lstat(r.ReadModelPath); errors.Is(err, fs.ErrNotExist) {
		err := projections.PublishFirst(gen.Path(), r.ReadModelPath)
		if err == nil {
			*published = true
			return nil, have, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, 0, err
		}
		// A process made the file meanwhile: publish over it, locked.
	}
	for {
		live, err := projections.Open(ctx, r.ReadModelPath, projections.Writer)
		if err != nil {
			return nil, 0, err
		}
		var old []string
		var again bool
		old, have, again, err = r.publishOver(ctx, st, gen, live, have)
		live.Close()
		if err != nil || !again {
			*published = err == nil
			return old, have, err
		}
		// Another rebuild published meanwhile: over that one.
	}
}

// publishOver publishes gen, which has applied have, over the live file
// live, or says to try again when the live path names another file once its
// lock is held. It returns what gen has applied then.
func (r *Rebuild) publishOver(ctx context.Context, st *eventstore.Store, gen, live *projections.DB, have uint64) (old []string, applied uint64, again bool, err error) {
	want, err := live.AppliedSeq(ctx)
	if err != nil {
		return nil, have, false, err
	}
	last, err := st.LastSeq(ctx)
	if err != nil {
		return nil, have, false, err
	}
	if want > last {
		// The live file applied events this stream does not hold (it was
		// made from another stream, or before a restore): nothing to catch
		// up with. The new file keeps its own instance id, so the API does
		// not take it for the old one's successor.
		r.Log.Warn("the live read model has applied more events than the stream holds (was the stream restored?); publishing the rebuilt one as a new read model: restart the API to serve it",
			"live_applied", want, "stream_last", last)
		old, err := projections.Publish(gen.Path(), r.ReadModelPath)
		return old, have, false, err
	}
	// The live file's instance id: the API and the projector moving to the
	// new file keep naming their applied notifications alike.
	if err := gen.SetInstanceID(ctx, live.InstanceID()); err != nil {
		return nil, have, false, err
	}
	// Far behind: catch up without holding the live file's lock.
	for have+uint64(r.batch()) < want {
		if have, err = r.catchUp(ctx, st, gen, have, want); err != nil {
			return nil, have, false, err
		}
		if want, err = live.AppliedSeq(ctx); err != nil {
			return nil, have, false, err
		}
	}
	// Within a batch: the rest under the lock, then the rename.
	want, unlock, err := live.LockWrites(ctx)
	if err != nil {
		return nil, have, false, err
	}
	defer unlock()
	if live.Moved() {
		return nil, have, true, nil
	}
	if have < want {
		if have, err = r.catchUp(ctx, st, gen, have, want); err != nil {
			return nil, have, false, err
		}
	}
	old, err = projections.Publish(gen.Path(), r.ReadModelPath)
	return old, have, false, err
}

// catchUp applies the stream's events after have to gen until it has
// applied want, and returns what it has applied.
func (r *Rebuild) catchUp(ctx context.Context, st *eventstore.Store, gen *projections.DB, have, want uint64) (uint64, error) {
	done := have
	err := applyStream(ctx, st, gen, r.AuditKeys, r.UnsignedUntil, have+1, r.batch(), func(a projections.Applied) bool {
		done = a.LastSeq
		return done >= want
	})
	if err == nil && done < want {
		err = fmt.Errorf("catching up stopped at %d of %d", done, want)
	}
	return done, err
}

func (r *Rebuild) batch() int {
	if r.BatchSize > 0 {
		return r.BatchSize
	}
	return DefaultBatchSize
}

// Build replays the stream into a fresh file at path (relaxed durability; the
// file is only used once complete) and returns the events applied.
func (r *Rebuild) build(ctx context.Context, st *eventstore.Store, path string) (uint64, error) {
	total, err := st.LastSeq(ctx)
	if err != nil {
		return 0, err
	}
	db, err := projections.Open(ctx, path, projections.Bulk)
	if err != nil {
		return 0, err
	}
	// Verify as the projector does: signatures while decoding, and each
	// signed event's chain link while applying (a replayed or reordered
	// copy holds its tree until an operator rejects it).
	db.VerifyWith(r.AuditKeys, r.UnsignedUntil)
	batch := r.batch()
	prog := r.progress(int64(total))
	start := time.Now()
	var applied uint64
	if total > 0 {
		err = applyStream(ctx, st, db, r.AuditKeys, r.UnsignedUntil, 1, batch, func(a projections.Applied) bool {
			prog(int64(a.LastSeq), false)
			applied = a.LastSeq
			return applied >= total
		})
		if applied < total {
			db.Close()
			if err == nil || ctx.Err() != nil {
				err = fmt.Errorf("rebuild interrupted at %d of %d: %v", applied, total, ctx.Err())
			}
			return 0, err
		}
	}
	prog(int64(applied), true)
	r.Log.Info("replayed", "events", applied, "seconds", time.Since(start).Seconds())
	return applied, db.Close()
}

// progress returns a reporter: a bar on a terminal, log lines otherwise.
func (r *Rebuild) progress(total int64) func(n int64, done bool) {
	if f, ok := r.Progress.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar := progressbar.NewOptions64(total, progressbar.OptionSetWriter(f),
			progressbar.OptionSetDescription("rebuilding read model"), progressbar.OptionShowCount(),
			progressbar.OptionShowIts(), progressbar.OptionSetItsString("events"),
			progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth())
		return func(n int64, done bool) {
			bar.Set64(n)
			if done {
				bar.Finish()
				fmt.Fprintln(f)
			}
		}
	}
	start, last := time.Now(), time.Time{}
	return func(n int64, done bool) {
		if !done && time.Since(last) < 2*time.Second {
			return
		}
		last = time.Now()
		el := time.Since(start).Seconds()
		rate := float64(n) / max(el, 1e-9)
		left := time.Duration(float64(total-n)/max(rate, 1e-9)) * time.Second
		r.Log.Info("rebuild progress", "applied", n, "total", total, "events_per_s", int(rate), "time_left", left.Round(time.Second).String())
	}
}

func removeDB(path string) {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		os.Remove(p)
	}
}
