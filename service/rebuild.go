package service

import (
	"context"
	"fmt"
	"io"
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

// Rebuild replays the whole event stream into a new read model file while
// the old one keeps serving, then swaps the new contents in atomically.
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

// Run rebuilds and swaps. It returns the number of events applied.
func (r *Rebuild) Run(ctx context.Context) error {
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
	tmp := fmt.Sprintf("%s.rebuild-%d", r.ReadModelPath, time.Now().UnixNano())
	defer removeDB(tmp)
	n, err := r.build(ctx, st, tmp)
	if err != nil {
		return err
	}
	// Reopened as a writer: the bulk file was completed (indexes built) when
	// build closed it.
	db, err := projections.Open(ctx, tmp, projections.Writer)
	if err != nil {
		return err
	}
	defer db.Close()
	swapStart := time.Now()
	if err := db.ReplaceContents(ctx, r.ReadModelPath); err != nil {
		return err
	}
	r.Log.Info("read model rebuilt and swapped in", "events", n, "path", r.ReadModelPath,
		"swap_seconds", time.Since(swapStart).Seconds())
	return nil
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
	batch := r.BatchSize
	if batch <= 0 {
		batch = DefaultBatchSize
	}
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
