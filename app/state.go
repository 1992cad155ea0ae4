package app

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
)

// The command side's state. Write decisions are made on aggregates loaded
// from the event stream — never from the read model, and never waiting for
// the projector — and kept in a bounded cache. The cache needs no
// invalidation protocol: every write carries the version it was decided on
// as an expected last sequence, so a stale entry (another API replica wrote
// meanwhile) is refused by the stream, dropped and reloaded.
//
// Loading is O(1) whatever the stream holds: a server's state is the fold
// of the first and the last message on its subject (mcp.server.updated
// carries every attribute); a credential's is the fold of the first and last
// message on its subject plus the last message on its use subject.

// heldError answers a write to an aggregate whose newest event this build
// cannot decode (an event of a newer version, during a rolling upgrade).
func heldError(m eventstore.Msg) error {
	var env struct {
		Type    string `json:"type"`
		Version int    `json:"version"`
	}
	_ = json.Unmarshal(m.Data, &env)
	name := env.Type
	if name == "" {
		name = "an undecodable event"
	} else {
		name = fmt.Sprintf("%s v%d", name, env.Version)
	}
	return &domain.Error{Kind: domain.KindUnavailable, Code: "aggregate_held",
		Message: fmt.Sprintf("This resource's history holds %s at sequence %d, which this version of the vault cannot read; "+
			"it is served again once every vault process is upgraded.", name, m.Seq)}
}

func decode(m eventstore.Msg) (events.Record, error) {
	r, err := events.Unmarshal(m.Data)
	if err != nil {
		return events.Record{}, heldError(m)
	}
	r.Sequence = m.Seq
	return r, nil
}

// loadMsgs fetches, concurrently, the first and last message of subject and
// the last message of each extra subject. A missing message is the zero Msg.
func loadMsgs(ctx context.Context, st *eventstore.Store, tr trust, subject string, extra ...string) (first, last eventstore.Msg, more []eventstore.Msg, err error) {
	more = make([]eventstore.Msg, len(extra))
	var wg sync.WaitGroup
	errs := make([]error, 2+len(extra))
	get := func(i int, dst *eventstore.Msg, f func() (eventstore.Msg, error)) {
		defer wg.Done()
		m, err := f()
		if errors.Is(err, eventstore.ErrNotFound) {
			return
		}
		*dst, errs[i] = m, err
	}
	wg.Add(2 + len(extra))
	go get(0, &first, func() (eventstore.Msg, error) { return st.First(ctx, subject) })
	go get(1, &last, func() (eventstore.Msg, error) { return st.Last(ctx, subject) })
	for i, s := range extra {
		go get(2+i, &more[i], func() (eventstore.Msg, error) { return st.Last(ctx, s) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return first, last, more, ErrUnavailable
	}
	return trusted(ctx, st, tr, subject, first, last, more) // app/sign.go
}

// loadServer reads a server's state from the stream. A server that never
// existed is the zero Server.
func loadServer(ctx context.Context, st *eventstore.Store, tr trust, id string) (domain.Server, error) {
	first, last, _, err := loadMsgs(ctx, st, tr, events.ServerSubject(id))
	if err != nil || first.Seq == 0 {
		return domain.Server{}, err
	}
	s := domain.Server{}
	for _, m := range dedupe(first, last) {
		r, err := decode(m)
		if err != nil {
			return domain.Server{}, err
		}
		s = domain.ApplyServer(s, r)
	}
	s.Version = last.Seq
	return s, nil
}

// loadCredential reads a credential's state from the stream.
func loadCredential(ctx context.Context, st *eventstore.Store, tr trust, serverID, id string) (domain.Credential, error) {
	subject := events.CredentialSubject(serverID, id)
	first, last, more, err := loadMsgs(ctx, st, tr, subject, events.UseSubject(serverID, id))
	if err != nil || first.Seq == 0 {
		return domain.Credential{}, err
	}
	msgs := dedupe(first, last)
	if r, err := decode(last); err == nil {
		if _, used := r.Event.(events.CredentialUsed); used && last.Seq != first.Seq {
			// Scheme v1 kept uses on the credential subject, so its last
			// message may hide a revoke: fold the whole subject.
			if msgs, err = allMsgs(ctx, st, subject, first); err != nil {
				return domain.Credential{}, err
			}
		}
	}
	c := domain.Credential{}
	for _, m := range append(msgs, more[0]) {
		if m.Seq == 0 {
			continue
		}
		r, err := decode(m)
		if err != nil {
			return domain.Credential{}, err
		}
		c = domain.ApplyCredential(c, r)
	}
	c.Version = last.Seq
	return c, nil
}

func dedupe(first, last eventstore.Msg) []eventstore.Msg {
	if last.Seq == 0 || last.Seq == first.Seq {
		return []eventstore.Msg{first}
	}
	return []eventstore.Msg{first, last}
}

// allMsgs reads every message of subject from first on (streams of scheme v1 only).
func allMsgs(ctx context.Context, st *eventstore.Store, subject string, first eventstore.Msg) ([]eventstore.Msg, error) {
	out := []eventstore.Msg{first}
	for m := first; ; {
		next, err := st.Next(ctx, subject, m.Seq+1)
		if errors.Is(err, eventstore.ErrNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, ErrUnavailable
		}
		out, m = append(out, next), next
	}
}

// cache is a bounded LRU of aggregate states by id.
type cache[T any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *entry[T], most recent first
	items map[string]*list.Element
}

type entry[T any] struct {
	id    string
	state T
}

func newCache[T any](max int) *cache[T] {
	return &cache[T]{max: max, order: list.New(), items: map[string]*list.Element{}}
}

func (c *cache[T]) get(id string) (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*entry[T]).state, true
	}
	var zero T
	return zero, false
}

func (c *cache[T]) put(id string, state T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		el.Value.(*entry[T]).state = state
		c.order.MoveToFront(el)
		return
	}
	c.items[id] = c.order.PushFront(&entry[T]{id: id, state: state})
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.items, old.Value.(*entry[T]).id)
	}
}

// keep records the state a write produced, forgetting a deleted aggregate.
func (c *cache[T]) keep(id string, state T, deleted bool) {
	if deleted {
		c.drop(id)
	} else {
		c.put(id, state)
	}
}

func (c *cache[T]) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		c.order.Remove(el)
		delete(c.items, id)
	}
}

// commandState is the API's write-side state.
type commandState struct {
	servers *cache[domain.Server]
	creds   *cache[domain.Credential]
}

// server returns the server's state: cached, or loaded when fresh is set or
// the cache has none.
func (v *Vault) server(ctx context.Context, st *eventstore.Store, id string, fresh bool) (domain.Server, error) {
	cs := v.state()
	if !fresh {
		if s, ok := cs.servers.get(id); ok {
			return s, nil
		}
	}
	s, err := loadServer(ctx, st, v.trust(), id)
	if err != nil {
		return domain.Server{}, err
	}
	if s.ID != "" {
		cs.servers.put(id, s)
	}
	return s, nil
}

// credential returns the credential's state, like server.
func (v *Vault) credential(ctx context.Context, st *eventstore.Store, serverID, id string, fresh bool) (domain.Credential, error) {
	cs := v.state()
	if !fresh {
		if c, ok := cs.creds.get(id); ok && c.ServerID == serverID {
			return c, nil
		}
	}
	c, err := loadCredential(ctx, st, v.trust(), serverID, id)
	if err != nil {
		return domain.Credential{}, err
	}
	if c.ID != "" {
		cs.creds.put(id, c)
	}
	return c, nil
}

func (v *Vault) state() *commandState {
	v.cmdOnce.Do(func() {
		n := v.CacheSize
		if n <= 0 {
			n = 100_000
		}
		v.cmd = &commandState{servers: newCache[domain.Server](n), creds: newCache[domain.Credential](n)}
	})
	return v.cmd
}
