package app

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/seal"
)

// The data-key pool takes the wrapped key's publish off a create's path.
//
// A create used to be two durable publishes one after the other: its data
// key (wrapped under the owner's key, bound to credential id, server and
// owner) into the keys stream, then its event. The pool stores keys ahead:
// after a create on an (owner, server) pair, a background filler picks new
// credential ids, makes a data key for each, wraps it with its exact binding
// and stores the lot in the keys stream with publishes acknowledged together.
// Only acknowledged keys enter the pool. A create that finds a key in its
// pair's pool takes the key's credential id as its own (NewCreateIntent) and
// appends its event at once: one durable round trip. Otherwise it stores its
// key inline, as before.
//
// The rules that keep it safe:
//   - The event is never stored without its key: a pooled key is stored (and
//     acknowledged) before its id is handed out.
//   - A key is destroyed only while its id is certainly unused: in the pool
//     (never handed out), or handed out to a create that certainly did not
//     store its event (CreateCredential's shred, or DiscardIntent when the
//     create never ran).
//   - Ids stay in creation order: a key older than MaxAge is not handed out
//     but destroyed (lists sort by id), and neither is a key older than a
//     create already answered on its pair.
//   - An owner erasure or a server deletion drops the pair's keys (destroyed),
//     and keys being stored meanwhile do not enter the pool.
//   - Bounded per pair and in total; key bytes are wiped when a key leaves
//     the pool unused. At shutdown (Vault.CloseKeyPool) the pool's keys are
//     destroyed; a crash leaves them as orphans, which the projector's sweep
//     destroys after its grace period (no credential has their ids).

// KeyPoolConfig sizes the data-key pool. A zero Size turns it off.
type KeyPoolConfig struct {
	// Size bounds the keys kept for one (owner, server) pair (default 0: off).
	// A pair's target grows from 0 when creates that follow the previous
	// one on the pair within hotGap find its pool empty, and shrinks when
	// its keys expire unused.
	Size int
	// Total bounds the keys kept over all pairs (default 4096).
	Total int
	// MaxAge is how long a pooled key may wait for its create (default 250 ms):
	// its credential id carries the time it was made, and lists sort by id.
	MaxAge time.Duration
	// HotGap: a pair is pooled once a create follows the previous one on
	// it within HotGap (default hotGap); negative: every pair from its first
	// create (tests).
	HotGap time.Duration
	// Atomic stores each fill as one JetStream atomic batch (one fsync for
	// the lot under sync_interval always) instead of asynchronous publishes
	// acknowledged together.
	Atomic bool
}

type poolPair struct {
	owner  events.Owner
	server string
}

// pooledKey is a stored data key whose credential id is not used yet.
type pooledKey struct {
	id   ulid.ULID
	pair poolPair
	dek  []byte
	kid  string
	seq  uint64 // where the keys stream stored it (0: not known)
	made time.Time
	// taken is set by whoever uses or discards the key, once.
	taken atomic.Bool
}

// credentialID is the id of the credential the key is bound to.
func (k *pooledKey) credentialID() string { return domain.CredentialID(k.id) }

// claim hands the key's bytes to the one caller that uses or discards it.
func (k *pooledKey) claim() bool { return k != nil && k.taken.CompareAndSwap(false, true) }

type pairPool struct {
	keys    []*pooledKey  // oldest first
	ready   chan struct{} // closed (and replaced) when a fill for the pair lands
	want    int           // adaptive target, 1..Size
	filling int           // keys being stored for this pair
	gen     uint64        // bumped by drops: fills of an older generation are discarded
	done    ulid.ULID     // the newest credential id answered on this pair
	used    time.Time     // the last create on this pair
}

// trashed is a key to destroy: by its sequence when known (one request),
// else by its credential id.
type trashed struct {
	id  string
	seq uint64
}

type keyPool struct {
	v   *Vault
	cfg KeyPoolConfig

	mu     sync.Mutex
	pairs  map[poolPair]*pairPool
	count  int // keys in the pool and being stored
	closed bool

	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	// trash holds keys to destroy (expired, dropped, failed stores).
	trash []trashed

	// stats, for tests and the bench log
	hits, misses, stored, destroyed atomic.Uint64
}

// keyPool returns the pool, starting it on first use; nil when off.
func (v *Vault) keyPool() *keyPool {
	if v.KeyPool.Size <= 0 {
		return nil
	}
	v.poolOnce.Do(func() {
		cfg := v.KeyPool
		if cfg.Total <= 0 {
			cfg.Total = 4096
		}
		if cfg.MaxAge <= 0 {
			cfg.MaxAge = 250 * time.Millisecond
		}
		p := &keyPool{v: v, cfg: cfg, pairs: map[poolPair]*pairPool{},
			wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
		go p.run()
		v.pool = p
	})
	return v.pool
}

// KeyPoolStats counts what the pool did: creates served from it (Hits) or
// not (Misses), keys stored into it and keys destroyed unused.
type KeyPoolStats struct {
	Hits, Misses, Stored, Destroyed uint64
	Pooled                          int // keys in the pool now (and being stored)
}

// KeyPoolStats returns the pool's counters (zero when it is off).
func (v *Vault) KeyPoolStats() KeyPoolStats {
	p := v.keyPool()
	if p == nil {
		return KeyPoolStats{}
	}
	p.mu.Lock()
	n := p.count
	p.mu.Unlock()
	return KeyPoolStats{Hits: p.hits.Load(), Misses: p.misses.Load(), Stored: p.stored.Load(), Destroyed: p.destroyed.Load(), Pooled: n}
}

// NewCreateIntent returns the intent of a credential create's first
// attempt: its credential id is a pooled key's when the owner's server has
// one (the key travels in the intent), else a new id. Whoever takes the
// intent must run CreateCredential with it or DiscardIntent it.
func (v *Vault) NewCreateIntent(owner events.Owner, serverID string) Intent {
	in := v.NewIntent()
	if p := v.keyPool(); p != nil {
		if k := p.take(poolPair{owner, serverID}); k != nil {
			in.ID, in.key = k.id, k
		}
	}
	return in
}

// DiscardIntent releases the pooled key of an intent whose create did not
// use it (the create never ran, or its credential needs no key): the key is
// destroyed — unless the intent may be in an idempotency record, which a
// retry can take over and whose create then reuses the stored key (a key
// destroyed after that retry read it would leave a credential whose secret
// cannot be opened): such a key's bytes are only wiped here, and the key
// stays stored for the retry, or for the sweep, which destroys keys of no
// credential after 25 h (records live 24 h). A no-op when the key was used,
// or there is none.
func (v *Vault) DiscardIntent(in Intent) {
	if !in.key.claim() { // a key in an intent comes from v.pool
		return
	}
	if in.recorded {
		seal.Wipe(in.key.dek)
		return
	}
	v.pool.discard(in.key)
}

// hotGap is how soon after the previous create on a pair a create must
// come for the pair to be pooled: keys stored ahead pay only where creates
// follow each other closely (an integration storing many users' tokens on
// one server); on pairs written now and then, a pooled key would mostly
// expire (one publish and one delete for nothing) and a create
// waiting for a fill would only be slower than storing its key inline.
const hotGap = 25 * time.Millisecond

// hot tells whether creates on the pair follow each other closely enough
// for keys stored ahead to pay (pp.used: the previous create's time).
func (p *keyPool) hot(pp *pairPool) bool {
	gap := p.cfg.HotGap
	if gap == 0 {
		gap = hotGap
	}
	return gap < 0 || time.Since(pp.used) < gap
}

// fillWait bounds how long a create waits for keys being stored for its
// pair when the pool is empty.
const fillWait = 5 * time.Millisecond

// take removes and returns the pair's oldest usable key, or nil. When the
// pair's pool is empty while keys are being stored for it, it waits for
// them (at most fillWait): that is cheaper than storing one more key inline,
// and an inline id, newer than the keys being stored, would make them
// unusable once its create is answered (ids stay in creation order).
func (p *keyPool) take(pair poolPair) *pooledKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.pairs[pair]
	for waited := false; pp != nil && !p.closed; waited = true {
		p.expireLocked(pp, time.Now())
		if len(pp.keys) > 0 {
			k := pp.keys[0]
			pp.keys[0] = nil
			pp.keys = pp.keys[1:]
			p.count--
			p.hits.Add(1)
			return k
		}
		if waited || pp.filling == 0 {
			if p.hot(pp) {
				pp.want = min(pp.want+1, p.cfg.Size) // a hot pair found empty: keep one more
			}
			break
		}
		ready := pp.ready
		p.mu.Unlock()
		t := time.NewTimer(fillWait)
		select {
		case <-ready:
		case <-t.C:
		}
		t.Stop()
		p.mu.Lock()
		if p.pairs[pair] != pp {
			break // dropped meanwhile
		}
	}
	p.misses.Add(1)
	return nil
}

// created notes a create answered on the pair (pooled or not): keys older
// than its id may no longer be handed out, and the pair is topped up.
func (p *keyPool) created(pair poolPair, id ulid.ULID) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	pp := p.pairs[pair]
	if pp == nil {
		pp = &pairPool{ready: make(chan struct{})} // no keys until it is hot (take)
		if p.cfg.HotGap < 0 {
			pp.want = 1
		}
		p.pairs[pair] = pp
	}
	if id.Compare(pp.done) > 0 {
		pp.done = id
	}
	pp.used = time.Now()
	short := pp.want > len(pp.keys)+pp.filling
	p.mu.Unlock()
	if !short {
		return // nothing to fill: don't make the loop scan every pair for it
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// drop destroys the pooled keys of the owner's pairs (server "" = all of
// the owner's servers) and discards keys being stored for them.
func (p *keyPool) drop(owner events.Owner, server string) {
	p.mu.Lock()
	for pair, pp := range p.pairs {
		if pair.owner != owner || (server != "" && pair.server != server) {
			continue
		}
		pp.gen++
		for _, k := range pp.keys {
			p.trashLocked(k)
		}
		p.count -= len(pp.keys)
		pp.keys = nil
		if pp.filling == 0 {
			delete(p.pairs, pair)
		}
	}
	p.mu.Unlock()
	p.destroyTrash()
}

// expireLocked moves the pair's keys that may no longer be handed out (too
// old, or older than a create answered on the pair) to the trash.
func (p *keyPool) expireLocked(pp *pairPool, now time.Time) {
	n := 0
	for n < len(pp.keys) {
		k := pp.keys[n]
		if now.Sub(k.made) < p.cfg.MaxAge && k.id.Compare(pp.done) > 0 {
			break
		}
		p.trashLocked(k)
		n++
	}
	if n > 0 {
		p.count -= n
		clear(pp.keys[:n])
		pp.keys = pp.keys[n:]
		pp.want = max(pp.want/2, 1) // expired unused: keep fewer
	}
}

// trashLocked wipes a pool key and queues its destruction.
func (p *keyPool) trashLocked(k *pooledKey) {
	if k.claim() {
		seal.Wipe(k.dek)
	}
	p.trash = append(p.trash, trashed{k.credentialID(), k.seq})
}

// discard destroys a key handed out but not used (claimed by the caller).
func (p *keyPool) discard(k *pooledKey) {
	seal.Wipe(k.dek)
	p.mu.Lock()
	p.trash = append(p.trash, trashed{k.credentialID(), k.seq})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run fills pairs that need keys, expires old ones and destroys the trash,
// until CloseKeyPool.
func (p *keyPool) run() {
	defer close(p.stopped)
	tick := time.NewTicker(p.cfg.MaxAge / 4)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
		case <-tick.C:
			p.expireAll()
		}
		p.destroyTrash()
		p.fill()
	}
}

func (p *keyPool) expireAll() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for pair, pp := range p.pairs {
		p.expireLocked(pp, now)
		if len(pp.keys) == 0 && pp.filling == 0 && now.Sub(pp.used) > 4*p.cfg.MaxAge {
			delete(p.pairs, pair) // idle
		}
	}
}

// fillBatch bounds the keys stored together.
const fillBatch = 256

type fillOrder struct {
	pair poolPair
	gen  uint64
	n    int
}

// fill stores new keys for the pairs below their target, as one group of
// publishes acknowledged together, and pools the acknowledged ones.
func (p *keyPool) fill() {
	st := p.v.Store()
	if st == nil {
		return
	}
	var orders []fillOrder
	total := 0
	p.mu.Lock()
	for pair, pp := range p.pairs {
		n := min(pp.want-len(pp.keys)-pp.filling, p.cfg.Total-p.count, fillBatch-total)
		if n <= 0 || p.closed || time.Since(pp.used) > p.cfg.MaxAge {
			continue // full, over budget, or not written to lately
		}
		pp.filling += n
		p.count += n
		total += n
		orders = append(orders, fillOrder{pair, pp.gen, n})
	}
	p.mu.Unlock()
	if len(orders) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var (
		keys []*pooledKey
		gens []uint64
		put  []eventstore.NewKey
	)
	// Each pair's keys are wrapped under its owner's key, which is read
	// from the keys stream: the pairs' reads go in parallel.
	made := make([][]*pooledKey, len(orders))
	wrapped := make([][][]byte, len(orders))
	var wg sync.WaitGroup
	for i, o := range orders {
		wg.Go(func() { made[i], wrapped[i] = p.wrap(ctx, st, o) })
	}
	wg.Wait()
	for j, o := range orders {
		made, wrapped := made[j], wrapped[j]
		for i, k := range made {
			keys, gens = append(keys, k), append(gens, o.gen)
			put = append(put, eventstore.NewKey{CredentialID: k.credentialID(), Wrapped: wrapped[i]})
		}
		if short := o.n - len(made); short > 0 { // the owner's key was not available
			p.mu.Lock()
			p.pairs[o.pair].filling -= short
			p.count -= short
			p.mu.Unlock()
		}
	}
	if len(put) == 0 {
		return
	}
	putKeys := st.PutKeys
	if p.cfg.Atomic {
		putKeys = st.PutKeysAtomic
	}
	seqs, errs := putKeys(ctx, put)
	now := time.Now()
	p.mu.Lock()
	for i, k := range keys {
		pp := p.pairs[k.pair] // kept while it has keys being stored
		pp.filling--
		k.seq = seqs[i]
		p.count--
		switch {
		case errs[i] != nil:
			// Maybe stored: destroy it (its id was never handed out).
			p.trashLocked(k)
		case p.closed || pp.gen != gens[i] || now.Sub(k.made) >= p.cfg.MaxAge || k.id.Compare(pp.done) <= 0:
			p.trashLocked(k) // dropped, closed, or too old already
		default:
			pp.keys = append(pp.keys, k)
			p.count++
			p.stored.Add(1)
		}
	}
	for _, o := range orders {
		if pp := p.pairs[o.pair]; pp != nil {
			close(pp.ready) // wakes the creates waiting for these keys
			pp.ready = make(chan struct{})
		}
	}
	p.mu.Unlock()
	if failed := countErrs(errs); failed > 0 {
		p.v.Log.Warn("storing pooled data keys failed", "failed", failed, "of", len(errs))
	}
}

func countErrs(errs []error) int {
	n := 0
	for _, err := range errs {
		if err != nil {
			n++
		}
	}
	return n
}

// wrap makes up to o.n new credential ids and data keys for the pair, each
// wrapped under the owner's key with its exact binding. It never creates an
// owner key (an erased owner's pool stays empty).
func (p *keyPool) wrap(ctx context.Context, st *eventstore.Store, o fillOrder) ([]*pooledKey, [][]byte) {
	rec, err := st.GetOwnerKey(ctx, seal.OwnerKeyID(o.pair.owner))
	if err != nil {
		return nil, nil
	}
	okey, err := p.v.Keys.OpenOwnerKey(o.pair.owner, rec)
	if err != nil {
		return nil, nil
	}
	defer seal.Wipe(okey)
	var (
		keys    []*pooledKey
		wrapped [][]byte
	)
	for range o.n {
		now := p.v.now()
		k := &pooledKey{id: p.v.newULID(now), pair: o.pair, made: time.Now()}
		b := seal.Binding{CredentialID: k.credentialID(), ServerID: o.pair.server, Owner: o.pair.owner}
		dek, w, err := seal.NewDataKeyUnder(okey, b)
		if err != nil {
			break
		}
		k.dek, k.kid = dek, w.KID
		keys, wrapped = append(keys, k), append(wrapped, marshalWrapped(w))
	}
	return keys, wrapped
}

// destroyConcurrency bounds the destructions in flight at once.
const destroyConcurrency = 16

// destroyTrash destroys the queued keys, several at once.
func (p *keyPool) destroyTrash() {
	p.mu.Lock()
	keys := p.trash
	p.trash = nil
	p.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	st := p.v.Store()
	if st == nil {
		return // the sweep takes them (no credential has their ids)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, destroyConcurrency)
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var err error
			if k.seq != 0 {
				// Trash holds keys that sealed nothing (a create that used
				// its key destroys it itself when it certainly failed).
				err = st.DiscardKeyVersion(ctx, k.seq)
			} else {
				err = st.DestroyKey(ctx, k.id)
			}
			if err != nil {
				p.v.Log.Warn("destroying an unused pooled data key failed; the sweep will", "credential_id", k.id, "err", err)
				return
			}
			p.destroyed.Add(1)
		})
	}
	wg.Wait()
}

// createdOn tells the pool that a create was answered on the pair.
func (v *Vault) createdOn(owner events.Owner, serverID string, id ulid.ULID) {
	if p := v.keyPool(); p != nil {
		p.created(poolPair{owner, serverID}, id)
	}
}

// dropKeys destroys the pooled keys of the owner's server (all of the
// owner's servers when serverID is empty): the server was deleted, or the
// owner erased (their keys are wrapped under the destroyed owner key).
func (v *Vault) dropKeys(owner events.Owner, serverID string) {
	if p := v.keyPool(); p != nil {
		p.drop(owner, serverID)
	}
}

// CloseKeyPool stops the pool and destroys its keys (graceful shutdown,
// after the HTTP server stopped: no create is running). Keys a crash leaves
// behind have no credential; the projector's sweep destroys them.
func (v *Vault) CloseKeyPool() {
	v.poolOnce.Do(func() {}) // never start it after this
	p := v.pool
	if p == nil {
		return
	}
	close(p.stop)
	<-p.stopped
	p.mu.Lock()
	p.closed = true
	for pair, pp := range p.pairs {
		for _, k := range pp.keys {
			p.trashLocked(k)
		}
		p.count -= len(pp.keys)
		delete(p.pairs, pair)
	}
	p.mu.Unlock()
	p.destroyTrash()
	st := v.KeyPoolStats()
	v.Log.Info("data-key pool closed", "hits", st.Hits, "misses", st.Misses, "stored", st.Stored, "destroyed_unused", st.Destroyed)
}
