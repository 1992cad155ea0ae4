package app

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/metrics"
)

// The read barrier: a read waits until the read model has applied the
// writes it must see. What the read model has applied is learnt from the
// projector's announcements (Applied, fed by eventstore.WatchApplied), so a
// waiting read wakes when the batch holding its target commits, not on a
// timer; the read model itself is consulted only as a fallback (when no
// announcements are received, after a reconnect, and when a wait lasts long
// enough that an announcement may have been lost).

// barrier is the Vault's read-barrier state.
type barrier struct {
	// applied is a sequence the read model is known to have applied.
	applied atomic.Uint64
	// announced is the highest sequence announced by the projector.
	announced atomic.Uint64
	// watched: announcements are being received (ResyncApplied ran).
	watched atomic.Bool

	mu      sync.Mutex
	changed chan struct{} // closed (and replaced) when applied advances
	// followed is closed (and replaced) when the stream follower sees more
	// (pending.go); only tree reads whose target it has not reached wait
	// on it.
	followed chan struct{}

	// noHolds: the read model held no tree as of a sequence (Vault.held).
	noHolds atomic.Pointer[noHolds]

	// follow: the events of the stream the read model may not have
	// applied, by server tree (pending.go).
	follow treeFollow

	// Counters of BarrierStats.
	announcements, waits, woken, fallbacks, behind, unrelated atomic.Uint64

	seq struct { // the shared stream-sequence requests (streamSeq)
		sync.Mutex
		inFlight int        // requests on the wire
		next     *seqFlight // gathering readers, not sent yet
	}
}

// advance raises applied to seq and wakes the waiting reads.
func (b *barrier) advance(seq uint64) {
	for {
		cur := b.applied.Load()
		if seq <= cur {
			return
		}
		if b.applied.CompareAndSwap(cur, seq) {
			break
		}
	}
	b.notify(&b.changed)
}

// notify closes *ch, waking the reads waiting on it (see wake).
func (b *barrier) notify(ch *chan struct{}) {
	b.mu.Lock()
	if *ch != nil {
		close(*ch)
		*ch = nil
	}
	b.mu.Unlock()
}

// wake returns a channel closed at the next notify of *ch: of b.changed
// when applied advances, of b.followed when the stream follower sees more.
func (b *barrier) wake(ch *chan struct{}) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if *ch == nil {
		*ch = make(chan struct{})
	}
	return *ch
}

// BarrierStats counts what reads waiting for the read model did.
type BarrierStats struct {
	// Announcements is how many applied announcements arrived.
	Announcements uint64
	// Waits is how many reads found the read model behind their target.
	Waits uint64
	// Woken is how many of them were released once an announcement
	// covered their target.
	Woken uint64
	// FallbackReads is how often a waiting read consulted the read model
	// itself (no announcements, or one late or lost).
	FallbackReads uint64
	// Behind is how many waits ended in ErrReadModelBehind.
	Behind uint64
	// Unrelated is how many reads of a server tree found the read model
	// behind their target only by events of other trees, and did not wait.
	Unrelated uint64
}

// BarrierStats returns the read barrier's counters since start.
func (v *Vault) BarrierStats() BarrierStats {
	b := &v.barrier
	return BarrierStats{Announcements: b.announcements.Load(), Waits: b.waits.Load(), Woken: b.woken.Load(),
		FallbackReads: b.fallbacks.Load(), Behind: b.behind.Load(), Unrelated: b.unrelated.Load()}
}

// Applied records the projector's announcement that the read model has
// applied every event up to seq (see eventstore.WatchApplied).
func (v *Vault) Applied(seq uint64) {
	b := &v.barrier
	b.announcements.Add(1)
	for {
		cur := b.announced.Load()
		if seq <= cur || b.announced.CompareAndSwap(cur, seq) {
			break
		}
	}
	b.advance(seq)
}

// ResyncApplied reads the read model's applied sequence: call it once
// announcements are subscribed and after every reconnect (announcements sent
// meanwhile are lost). From the first call on, reads wait on announcements.
func (v *Vault) ResyncApplied() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := v.refreshApplied(ctx); err != nil {
		v.Log.Warn("reading the read model's applied sequence failed", "err", err)
	}
	v.barrier.watched.Store(true)
}

func (v *Vault) refreshApplied(ctx context.Context) error {
	seq, err := v.DB.AppliedSeq(ctx)
	if err != nil {
		return err
	}
	v.barrier.advance(seq)
	return nil
}

type minSeqKey struct{}

// WithMinSequence returns ctx carrying the lowest stream sequence a read
// must see (the X-Vault-Min-Sequence header): Sync then waits until the read
// model has applied seq, without asking the stream for its last sequence.
func WithMinSequence(ctx context.Context, seq uint64) context.Context {
	return context.WithValue(ctx, minSeqKey{}, seq)
}

// Sync waits until the read model has applied what the read must see, at
// most SyncTimeout (then ErrReadModelBehind). With WithMinSequence, that is
// the given sequence. Otherwise it is every event the stream held when Sync
// was called, so a read after it sees every write answered before it; with
// the stream unreachable Sync returns at once (reads keep answering from the
// read model; no write can be answered meanwhile).
func (v *Vault) Sync(ctx context.Context) error { return v.syncFor(ctx, "") }

// syncFor is Sync for a read of one server tree (serverID; "" for a read
// of more): without X-Vault-Min-Sequence it waits only for the events of
// that tree and those outside every tree (pending.go). A read with it waits
// for the sequence it names, whatever that changed, as the header promises.
func (v *Vault) syncFor(ctx context.Context, tree string) error {
	if seq, ok := ctx.Value(minSeqKey{}).(uint64); ok {
		return v.waitApplied(ctx, "", seq)
	}
	st := v.Store()
	if st == nil {
		return nil
	}
	asked := time.Now()
	target, err := v.streamSeq(ctx, st)
	v.Metrics.ObserveReadWait(metrics.WaitStream, time.Since(asked))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	}
	return v.waitApplied(ctx, tree, target)
}

// Fallback reads of the read model while a read waits: without
// announcements, a short back-off (the projector's commit is the only
// signal); with them, only in case one was lost.
const (
	pollFirst, pollMost   = 100 * time.Microsecond, 5 * time.Millisecond
	watchFirst, watchMost = 10 * time.Millisecond, 100 * time.Millisecond
	defaultSyncTimeout    = 5 * time.Second
)

// waitApplied waits until the read model has applied what a read of tree
// ("" for none) whose target is target must see: target, or for a tree
// read the newest event at or below it of the tree or outside every tree,
// once the stream follower has seen target (barrier.needFor).
func (v *Vault) waitApplied(ctx context.Context, tree string, target uint64) error {
	b := &v.barrier
	if b.applied.Load() >= target {
		return nil
	}
	// ready reports whether the read may go on, what it needs applied, and
	// whether that need is known (barrier.needFor).
	ready := func() (ok bool, need uint64, known bool) {
		need, known = b.needFor(tree, target)
		return b.applied.Load() >= need, need, known
	}
	if ok, need, _ := ready(); ok {
		if need < target {
			b.unrelated.Add(1)
		}
		return nil
	}
	timeout := v.SyncTimeout
	if timeout == 0 {
		timeout = defaultSyncTimeout
	}
	b.waits.Add(1)
	start := time.Now()
	defer func() { v.Metrics.ObserveReadWait(metrics.WaitReadModel, time.Since(start)) }()
	deadline := start.Add(timeout)
	wait, most := watchFirst, watchMost
	if !b.watched.Load() {
		wait, most = pollFirst, pollMost
		b.fallbacks.Add(1)
		if err := v.refreshApplied(ctx); err != nil {
			return err
		}
	}
	timer := time.NewTimer(min(wait, timeout))
	defer timer.Stop()
	for {
		woken := b.wake(&b.changed)
		var seen <-chan struct{} // the follower's progress; nil: not waited on
		ok, need, known := ready()
		if !known {
			seen = b.wake(&b.followed)
			// The follower may have reached the target meanwhile.
			ok, need, _ = ready()
		}
		if ok {
			if b.announced.Load() >= need {
				b.woken.Add(1)
			}
			return nil
		}
		select {
		case <-woken:
		case <-seen:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			b.fallbacks.Add(1)
			if err := v.refreshApplied(ctx); err != nil {
				return err
			}
			if ok, _, _ := ready(); ok {
				return nil
			}
			left := time.Until(deadline)
			if left <= 0 {
				b.behind.Add(1)
				return ErrReadModelBehind
			}
			wait = min(2*wait, most)
			timer.Reset(min(wait, left))
		}
	}
}

// seqFlight is one stream-sequence request shared by every read that joined
// it before it was sent.
type seqFlight struct {
	done chan struct{}
	seq  uint64
	err  error
}

// maxSeqInFlight is how many stream-sequence requests may be outstanding:
// a read arriving while one is on the wire sends its own rather than
// waiting for it to return (one round trip instead of up to two); beyond
// this, reads gather in the next request.
const maxSeqInFlight = 2

// streamSeq returns the stream's last sequence as of some moment after the
// call began. Concurrent reads share requests: a caller joins the next
// request to be sent (never one already on the wire, whose answer could
// predate a write acknowledged before the caller arrived), which is sent at
// once unless maxSeqInFlight are outstanding, so under load there are at
// most that many requests per round trip instead of one per read.
func (v *Vault) streamSeq(ctx context.Context, st *eventstore.Store) (uint64, error) {
	s := &v.barrier.seq
	s.Lock()
	if s.next == nil {
		s.next = &seqFlight{done: make(chan struct{})}
	}
	f := s.next
	if s.inFlight < maxSeqInFlight {
		s.inFlight++
		s.next = nil
		go v.fetchSeqs(st, f)
	}
	s.Unlock()
	select {
	case <-f.done:
		return f.seq, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// fetchSeqs sends f, then whatever flight gathered while every slot was
// busy, until none did.
func (v *Vault) fetchSeqs(st *eventstore.Store, f *seqFlight) {
	s := &v.barrier.seq
	for f != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		f.seq, f.err = st.LastSeq(ctx)
		cancel()
		close(f.done)
		s.Lock()
		f, s.next = s.next, nil
		if f == nil {
			s.inFlight--
		}
		s.Unlock()
	}
}

// noHolds is what the read model last said of held trees: none, as of the
// applied sequence seq, read at the time at.
type noHolds struct {
	seq uint64
	at  time.Time
}

// noHoldsFor bounds how long a "none held" answer is reused while nothing
// new is applied (a rebuild may swap in contents with holds).
const noHoldsFor = time.Second

// syncTree readies a read of one server tree: Sync, then 503
// aggregate_held when the projector holds the tree.
func (v *Vault) syncTree(ctx context.Context, owner events.Owner, serverID string) error {
	if err := v.syncFor(ctx, serverID); err != nil {
		return err
	}
	return v.held(ctx, owner, serverID)
}

// held answers 503 aggregate_held when the owner's server is held, like
// View.Held, without a query per read while the read model holds no tree:
// a "none held" answer read at applied sequence s serves every read whose
// wait ended at or before s (holds are only made by applying events, at
// later sequences), for at most noHoldsFor.
func (v *Vault) held(ctx context.Context, owner events.Owner, serverID string) error {
	known := v.barrier.applied.Load()
	if n := v.barrier.noHolds.Load(); n != nil && n.seq >= known && time.Since(n.at) < noHoldsFor {
		return nil
	}
	at := time.Now()
	seq, any, err := v.DB.View().AnyHeld(ctx)
	if err != nil {
		return err
	}
	if !any {
		v.barrier.noHolds.Store(&noHolds{seq: seq, at: at})
		return nil
	}
	return v.DB.View().Held(ctx, owner, serverID)
}
