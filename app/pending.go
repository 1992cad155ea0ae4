package app

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
)

// Reads of one server tree wait only for that tree's events.
//
// A read must see every write answered before it began: the stream's last
// sequence then, its target. The read model usually lags the stream by the
// projector's latest batch, and under a steady write load a read would
// mostly wait for events of other owners and servers, which cannot change
// what it answers. A server and its credentials are one consistency boundary
// (events/doc.go): a read of a server tree needs only the tree's own events
// and the events outside every tree (an owner's erasure, a key rotation)
// applied. So the API follows the stream's subjects (headers only, an
// ordered consumer: every stored event, in order) and keeps, for the events
// the read model has not applied yet, the newest sequence of each tree they
// touched and the newest of the events outside trees. A tree read whose
// target the stream follower has reached waits until the read model has
// applied the newest of those at or below its target (nothing when there is
// none); otherwise it waits for the target itself, as every other read does.
// A read that names a sequence (X-Vault-Min-Sequence) waits for that
// sequence itself, as the header promises (Vault.syncFor).

// treeFollow is what the API's stream follower knows of events the read
// model may not have applied yet.
type treeFollow struct {
	mu sync.Mutex
	// on: the follower is running; from: every event after it has been
	// seen (the follower started there); seen: the newest event seen.
	on         bool
	from, seen uint64
	// trees is the newest seen sequence per server tree; outside, the
	// newest seen sequence of an event outside every tree. Entries the read
	// model has applied are dropped when the map grows (prune).
	trees   map[string]uint64
	outside uint64
	pruneAt int
}

// Bounds of treeFollow.trees: it is pruned of applied trees when it
// reaches pruneAt (at least minPrune, twice what the last pruning kept).
// When a pruning keeps more than half of maxFollowedTrees (a read model far
// behind), the map is cleared and following starts afresh from the current
// event, so it never holds more than maxFollowedTrees.
const (
	minPrune         = 1024
	maxFollowedTrees = 100_000
)

// treeOf is the server tree of an event subject ("vault.<server_id>.…"),
// false for a subject outside every tree.
func treeOf(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, events.SubjectPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, ".")
	if !ok || !strings.HasPrefix(id, domain.ServerIDPrefix) {
		return "", false
	}
	return id, true
}

// followFrom (re)starts following after sequence from: what was known is
// dropped, since events after from are delivered again.
func (v *Vault) followFrom(from uint64) {
	f := &v.barrier.follow
	f.mu.Lock()
	f.on, f.from, f.seen = true, from, from
	f.trees, f.outside, f.pruneAt = map[string]uint64{}, 0, minPrune
	f.mu.Unlock()
	v.barrier.notify(&v.barrier.followed)
}

// followStopped: the follower stopped; reads wait for their targets.
func (v *Vault) followStopped() {
	f := &v.barrier.follow
	f.mu.Lock()
	f.on, f.trees = false, nil
	f.mu.Unlock()
}

// errStreamWentBack ends the follower when the stream delivers a sequence
// it has seen (a restored stream): it starts again from the stream's end.
var errStreamWentBack = errors.New("app: the stream's sequence went back")

// followed records the stored event seq on subject (in stream order).
func (v *Vault) followed(seq uint64, subject string) error {
	f := &v.barrier.follow
	applied := v.barrier.applied.Load()
	f.mu.Lock()
	defer v.barrier.notify(&v.barrier.followed)
	defer f.mu.Unlock()
	if !f.on {
		return nil
	}
	if seq <= f.seen {
		f.on, f.trees = false, nil
		return errStreamWentBack
	}
	if tree, ok := treeOf(subject); ok {
		f.trees[tree] = seq
	} else {
		f.outside = seq
	}
	f.seen = seq
	if len(f.trees) >= f.pruneAt {
		for t, s := range f.trees {
			if s <= applied {
				delete(f.trees, t)
			}
		}
		if len(f.trees) > maxFollowedTrees/2 {
			f.from, f.trees, f.outside = seq, map[string]uint64{}, 0
		}
		f.pruneAt = max(minPrune, 2*len(f.trees))
	}
	return nil
}

// needFor is the sequence a read of tree must see applied, for a read whose
// target is target, and whether it is known: false while the follower has
// not reached target (the caller waits for it or for target). A read of no
// tree ("") needs its target.
func (b *barrier) needFor(tree string, target uint64) (uint64, bool) {
	if tree == "" {
		return target, true
	}
	f := &b.follow
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.on {
		return target, true
	}
	if b.applied.Load() < f.from {
		// Events between the read model and the follower's start are
		// unknown.
		return target, true
	}
	if f.seen < target {
		return target, false
	}
	need := min(f.outside, target)
	if s, ok := f.trees[tree]; ok {
		need = max(need, min(s, target))
	}
	return need, true
}

// FollowTrees runs the stream follower of st until ctx ends, restarting it
// (after a second) when it fails. Without it, every read waits for its
// whole target.
func (v *Vault) FollowTrees(ctx context.Context, st *eventstore.Store) {
	for ctx.Err() == nil {
		last, err := st.LastSeq(ctx)
		if err == nil {
			v.followFrom(last)
			err = st.FollowSubjects(ctx, last+1, v.followed)
		}
		v.followStopped()
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, context.Canceled) {
			v.Log.Warn("following the stream's subjects failed; reads wait for every event until it resumes", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
