package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
)

// Recording uses and tool inventories happens off the caller's critical
// path: a bounded in-process queue drained by a few workers that append to
// the stream, retrying with backoff until the append is acknowledged. Each
// job has a fixed message id, so a retry after a lost acknowledgement is
// deduplicated by JetStream instead of stored twice. A caller reserves its
// place before the work it records (Reserve), so a full queue refuses new
// work instead of losing its record; Drain, at shutdown, appends what is
// queued before the process exits.

// Defaults of the use queue.
const (
	DefaultUseQueueSize    = 4096
	DefaultUseQueueWorkers = 16
)

// ErrUseBacklog: the queue of use events is full (the stream is slower than
// the calls); the call was not made so that no use goes unrecorded.
var ErrUseBacklog = errors.New("The vault cannot record credential uses as fast as they happen; the call was not made. Retry shortly.")

// useJob is one record to append; run is retried until it returns nil.
type useJob struct {
	run  func(ctx context.Context) error
	done chan error // optional: told the final outcome
	what string     // for logs: an event type, never data
}

// useQueue is the queue and its workers; the zero value starts lazily.
type useQueue struct {
	once    sync.Once
	jobs    chan useJob
	slots   chan struct{}
	wg      sync.WaitGroup
	stop    chan struct{}
	closed  atomic.Bool
	mu      sync.RWMutex  // held for reading by enqueue, for writing by Drain's close
	pending atomic.Int64  // reserved places not yet filled or released
	backoff time.Duration // first retry delay
}

// useQueueOptions size the queue; zero fields take the defaults (the
// defaults are all the vault uses; the queue test shrinks it).
type useQueueOptions struct {
	Size    int
	Workers int
	// Backoff is the first retry delay (doubling up to 5 s); 100 ms when zero.
	Backoff time.Duration
}

func (v *Vault) uses() *useQueue {
	q := &v.proxy.uses
	q.once.Do(func() { v.startUses(useQueueOptions{}) })
	return q
}

func (v *Vault) startUses(o useQueueOptions) {
	q := &v.proxy.uses
	if o.Size <= 0 {
		o.Size = DefaultUseQueueSize
	}
	if o.Workers <= 0 {
		o.Workers = DefaultUseQueueWorkers
	}
	q.backoff = o.Backoff
	if q.backoff <= 0 {
		q.backoff = 100 * time.Millisecond
	}
	q.jobs = make(chan useJob, o.Size)
	q.slots = make(chan struct{}, o.Size)
	q.stop = make(chan struct{})
	for range o.Workers {
		q.wg.Add(1)
		go v.useWorker(q, q.jobs)
	}
}

func (v *Vault) useWorker(q *useQueue, jobs <-chan useJob) {
	defer q.wg.Done()
	for job := range jobs {
		v.runJob(q, job)
		<-q.slots
	}
}

// runJob retries job until it succeeds. After Drain's deadline (q.stop
// closed) a failing job is given up and logged.
func (v *Vault) runJob(q *useQueue, job useJob) {
	wait := q.backoff
	for {
		ctx, cancel := context.WithTimeout(context.Background(), v.writeTimeout())
		err := job.run(ctx)
		cancel()
		if err == nil {
			if job.done != nil {
				job.done <- nil
			}
			return
		}
		select {
		case <-q.stop:
			v.Log.Error("a recorded use could not be appended before shutdown", "event", job.what, "err", err)
			if job.done != nil {
				job.done <- err
			}
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (v *Vault) writeTimeout() time.Duration {
	if v.WriteTimeout > 0 {
		return v.WriteTimeout
	}
	return 4 * time.Second
}

// UseSlot is a reserved place in the use queue.
type UseSlot struct {
	v    *Vault
	used bool
}

// ReserveUse reserves a place for one use record, waiting at most until ctx
// ends (or 2 s) for the queue to have room: ErrUseBacklog otherwise.
func (v *Vault) ReserveUse(ctx context.Context) (*UseSlot, error) {
	q := v.uses()
	if q.closed.Load() {
		return nil, ErrUseBacklog
	}
	select {
	case q.slots <- struct{}{}:
		q.pending.Add(1)
		return &UseSlot{v: v}, nil
	default:
	}
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case q.slots <- struct{}{}:
		q.pending.Add(1)
		return &UseSlot{v: v}, nil
	case <-ctx.Done():
	case <-t.C:
	}
	return nil, ErrUseBacklog
}

// Release gives the place back unused (the call was not made).
func (s *UseSlot) Release() {
	if s != nil && !s.used {
		s.used = true
		q := s.v.uses()
		q.pending.Add(-1)
		<-q.slots
	}
}

// Record queues the use of c in the reserved place. occurred is when the
// use happened. It returns at once.
func (s *UseSlot) Record(c domain.Credential, use events.CredentialUsed, occurred time.Time) {
	if s == nil || s.used {
		return
	}
	s.used = true
	s.v.enqueue(s.v.useJob(c, use, occurred, nil))
}

// RecordUse reserves a place and queues one use of c (for uses made once
// per session, such as initialize and tools/list). A full queue drops the
// record and logs it; the work it describes has already happened.
func (v *Vault) RecordUse(c domain.Credential, use events.CredentialUsed) {
	slot, err := v.ReserveUse(context.Background())
	if err != nil {
		v.Log.Warn("use queue full; a use record was dropped", "operation", use.Operation)
		return
	}
	slot.Record(c, use, time.Now())
}

// enqueue fills a reserved place with job. A reserved slot guarantees room
// in jobs (same capacity), so this never blocks.
func (v *Vault) enqueue(job useJob) {
	q := v.uses()
	q.mu.RLock()
	defer q.mu.RUnlock()
	q.pending.Add(-1)
	if q.jobs == nil {
		v.Log.Error("a use was recorded after shutdown and is lost", "event", job.what)
		if job.done != nil {
			job.done <- ErrUnavailable
		}
		return
	}
	q.jobs <- job
}

func (v *Vault) useJob(c domain.Credential, use events.CredentialUsed, occurred time.Time, done chan error) useJob {
	at := events.NewTime(occurred)
	if v.Now != nil {
		at = v.now()
	}
	_, recs, err := domain.RecordUse(c, use, at)
	if err != nil {
		return useJob{what: events.TypeCredentialUsed, done: done, run: func(context.Context) error { return nil }}
	}
	r := recs[0]
	r.ID = v.newULID(at).String()
	body, merr := events.Marshal(r.Meta, r.Event)
	subject := events.CredentialUsedSubject(c.ServerID, c.ID)
	return useJob{what: events.TypeCredentialUsed, done: done, run: func(ctx context.Context) error {
		if merr != nil {
			return nil // cannot happen for this type; never retried forever
		}
		return v.appendUse(ctx, subject, body, r.ID)
	}}
}

// DrainUses stops taking records and appends everything queued, giving up
// (and logging) what is still failing when ctx ends.
func (v *Vault) DrainUses(ctx context.Context) {
	q := v.uses()
	if !q.closed.CompareAndSwap(false, true) {
		return
	}
	// Places reserved before the close are filled by calls still running.
	for q.pending.Load() > 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	q.mu.Lock()
	close(q.jobs)
	q.jobs = nil
	q.mu.Unlock()
	finished := make(chan struct{})
	go func() { q.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		close(q.stop)
		<-finished
	}
}

// ---- tool inventories ------------------------------------------------------

// ObserveTools queues a comparison of a server's tool inventory (tool name
// to upstream.ToolHash) with the one last recorded on the server's tools
// subject; when they differ it appends mcp.server.tools_changed, expecting
// that subject's last sequence (a concurrent recorder makes it re-read and
// decide again). source is "test" or "proxy". It returns at once.
func (v *Vault) ObserveTools(s domain.Server, tools map[string]string, source string) {
	slot, err := v.ReserveUse(context.Background())
	if err != nil {
		v.Log.Warn("use queue full; a tool inventory was not compared", "server_id", s.ID)
		return
	}
	slot.used = true
	tools = maps(tools)
	v.enqueue(useJob{what: events.TypeServerToolsChanged, run: func(ctx context.Context) error {
		return v.recordTools(ctx, s, tools, source)
	}})
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// recordTools decides on the last event of the tools subject (command-side
// state, never the read model) and appends the change, if any.
func (v *Vault) recordTools(ctx context.Context, s domain.Server, tools map[string]string, source string) error {
	subject := events.ToolsSubject(s.ID)
	body, seq, err := v.lastOnSubject(ctx, subject)
	if err != nil {
		return err
	}
	prev := map[string]string{}
	if seq > 0 {
		rec, err := events.Unmarshal(body)
		if err != nil {
			return nil // an event this version cannot read: do not guess over it
		}
		if e, ok := rec.Event.(events.ServerToolsChanged); ok {
			prev = e.Tools
		}
	}
	ch := events.ServerToolsChanged{Added: []string{}, Removed: []string{}, Changed: []string{},
		Initial: seq == 0, Tools: tools, Source: source}
	for name, h := range tools {
		switch old, ok := prev[name]; {
		case !ok:
			ch.Added = append(ch.Added, name)
		case old != h:
			ch.Changed = append(ch.Changed, name)
		}
	}
	for name := range prev {
		if _, ok := tools[name]; !ok {
			ch.Removed = append(ch.Removed, name)
		}
	}
	if len(ch.Added)+len(ch.Removed)+len(ch.Changed) == 0 && seq > 0 {
		return nil
	}
	sort.Strings(ch.Added)
	sort.Strings(ch.Removed)
	sort.Strings(ch.Changed)
	now := v.now()
	meta := events.Meta{ID: v.newULID(now).String(), AggregateID: s.ID, ServerID: s.ID, Owner: s.Owner, OccurredAt: now}
	data, err := events.Marshal(meta, ch)
	if err != nil {
		return nil
	}
	// The same change seen by two recorders at once has the same id: one
	// is stored, the other deduplicated.
	msgID := "tools-" + s.ID + "-" + strconv.FormatUint(seq, 10) + "-" + inventoryDigest(tools)[:32]
	err = v.appendExpecting(ctx, subject, data, msgID, seq)
	if errors.Is(err, eventstore.ErrConflict) {
		return err // retried: the next attempt re-reads the subject
	}
	return err
}

// inventoryDigest is one hash over a whole inventory.
func inventoryDigest(tools map[string]string) string {
	names := make([]string, 0, len(tools))
	for n := range tools {
		names = append(names, n)
	}
	slices.Sort(names)
	b, _ := json.Marshal(struct {
		N []string
		T map[string]string
	}{names, tools})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ---- the store seam --------------------------------------------------------
// The three functions below are the only places this file reaches the event
// store, so the append API can change under them in one place.

// appendUse appends a use event, unchecked (it never conflicts). An ack
// that says an earlier attempt stored it is success.
func (v *Vault) appendUse(ctx context.Context, subject string, body []byte, msgID string) error {
	st := v.Store()
	if st == nil {
		return ErrUnavailable
	}
	signed, err := v.signBody(ctx, st, subject, body, "", 0) // app/sign.go
	if err != nil {
		return err
	}
	_, err = st.Append(ctx, subject, body, append(signed, eventstore.MsgID(msgID), eventstore.Grouped())...)
	return err
}

// appendExpecting appends to a literal subject expecting its last sequence
// (eventstore.ErrConflict when another append came first).
func (v *Vault) appendExpecting(ctx context.Context, subject string, body []byte, msgID string, expect uint64) error {
	st := v.Store()
	if st == nil {
		return ErrUnavailable
	}
	signed, err := v.signBody(ctx, st, subject, body, subject, expect) // app/sign.go
	if err != nil {
		return err
	}
	ack, err := st.Append(ctx, subject, body, append(signed, eventstore.MsgID(msgID), eventstore.ExpectLast(subject, expect))...)
	if err == nil {
		v.signed(subject, ack.Seq, body)
	}
	return err
}

// lastOnSubject reads the newest event on a literal subject.
func (v *Vault) lastOnSubject(ctx context.Context, subject string) ([]byte, uint64, error) {
	st := v.Store()
	if st == nil {
		return nil, 0, ErrUnavailable
	}
	return st.LastOnSubject(ctx, subject)
}
