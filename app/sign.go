package app

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
)

// Tamper evidence on the append path: every event is signed by the audit
// keyring, and a state-changing event names the message it follows on its
// own subject (its stream sequence and body; see audit.After). The command
// side expects that message's sequence anyway, so the link costs nothing
// but the predecessor's body, which a small cache of the last message
// appended per subject usually holds; otherwise one leader get reads it.

// linkCache remembers the chain value of the last message this process
// appended on a subject.
type linkCache struct {
	once sync.Once
	c    *cache[linkEntry]
}

type linkEntry struct {
	seq  uint64
	link audit.Link
}

func (l *linkCache) get() *cache[linkEntry] {
	l.once.Do(func() { l.c = newCache[linkEntry](100_000) })
	return l.c
}

// sign returns the append options that sign body as stored on subject.
func (v *Vault) sign(ctx context.Context, st *eventstore.Store, subject string, body []byte, rec events.Record,
	expectSubject string, expectSeq uint64) ([]eventstore.AppendOption, error) {
	if v.Audit == nil {
		return nil, nil
	}
	link := audit.Unchained
	if audit.Chained(rec.Event.EventType()) {
		var err error
		if link, err = v.linkFor(ctx, st, subject, rec, expectSubject, expectSeq); err != nil {
			return nil, err
		}
	}
	return []eventstore.AppendOption{eventstore.Headers(v.Audit.Sign(subject, body, link))}, nil
}

// signBody is sign for an event already marshalled (the use and tool
// inventory appends of app/use.go).
func (v *Vault) signBody(ctx context.Context, st *eventstore.Store, subject string, body []byte,
	expectSubject string, expectSeq uint64) ([]eventstore.AppendOption, error) {
	if v.Audit == nil {
		return nil, nil
	}
	rec, err := events.Unmarshal(body)
	if err != nil {
		return nil, err
	}
	return v.sign(ctx, st, subject, body, rec, expectSubject, expectSeq)
}

// linkFor is the chain link of a state-changing event appended on subject.
func (v *Vault) linkFor(ctx context.Context, st *eventstore.Store, subject string, rec events.Record,
	expectSubject string, expectSeq uint64) (audit.Link, error) {
	switch rec.Event.(type) {
	case events.ServerCreated, events.CredentialCreated:
		// The first event of a new aggregate (a fresh id): if its subject
		// held anything, verification rightly reports the break.
		return audit.FirstLink, nil
	}
	if expectSubject == subject {
		if expectSeq == 0 {
			return audit.FirstLink, nil
		}
		if e, ok := v.links.get().get(subject); ok && e.seq == expectSeq {
			return e.link, nil
		}
	}
	// The predecessor as the stream's leader has it. Should it differ from
	// what the write expects, the append is refused and decided again.
	m, err := st.Last(ctx, subject)
	if errors.Is(err, eventstore.ErrNotFound) {
		return audit.FirstLink, nil
	}
	if err != nil {
		return audit.Link{}, ErrUnavailable
	}
	return audit.After(m.Seq, m.Data), nil
}

// signed records that body is now the last message on subject.
func (v *Vault) signed(subject string, seq uint64, body []byte) {
	if v.Audit != nil {
		v.links.get().put(subject, linkEntry{seq: seq, link: audit.After(seq, body)})
	}
}

// trust is how the command side checks what it loads.
type trust struct {
	keys          *audit.Keyring
	unsignedUntil uint64
}

func (v *Vault) trust() trust { return trust{keys: v.Audit, unsignedUntil: v.UnsignedUntil} }

// trusted checks the signatures of the messages a loader fetched. A message
// that does not verify holds the aggregate (503 aggregate_held naming it)
// until an operator rejects its sequence; a rejected message is left out: a
// rejected last message is replaced by the newest acceptable one before it
// (a walk of the subject, for this rare case), a rejected use by none.
func trusted(ctx context.Context, st *eventstore.Store, tr trust, subject string, first, last eventstore.Msg, more []eventstore.Msg) (eventstore.Msg, eventstore.Msg, []eventstore.Msg, error) {
	kr := tr.keys
	if kr == nil {
		return first, last, more, nil
	}
	ok := func(m eventstore.Msg) (bool, error) { // false: rejected
		if m.Seq == 0 || (m.Seq <= tr.unsignedUntil && m.Header.Get(audit.HeaderSig) == "") {
			return true, nil
		}
		if _, err := kr.VerifySignature(m.Subject, m.Data, m.Header); err == nil {
			return true, nil
		} else if rejected(ctx, st, kr, m) {
			return false, nil
		} else {
			return false, brokenError(m, err)
		}
	}
	for i := range more {
		keep, err := ok(more[i])
		if err != nil {
			return first, last, more, err
		}
		if !keep {
			more[i] = eventstore.Msg{}
		}
	}
	keepFirst, err := ok(first)
	if err != nil {
		return first, last, more, err
	}
	keepLast, err := ok(last)
	if err != nil {
		return first, last, more, err
	}
	if keepFirst && keepLast {
		return first, last, more, nil
	}
	// Walk the subject and keep what verifies or was not rejected.
	var kept []eventstore.Msg
	for m := first; m.Seq != 0; {
		k, err := ok(m)
		if err != nil {
			return first, last, more, err
		}
		if k {
			kept = append(kept, m)
		}
		next, err := st.Next(ctx, subject, m.Seq+1)
		if errors.Is(err, eventstore.ErrNotFound) {
			break
		}
		if err != nil {
			return first, last, more, ErrUnavailable
		}
		m = next
	}
	if len(kept) == 0 {
		return eventstore.Msg{}, eventstore.Msg{}, more, nil
	}
	return kept[0], kept[len(kept)-1], more, nil
}

// rejected reports whether an operator's signed rejection names m.
func rejected(ctx context.Context, st *eventstore.Store, kr *audit.Keyring, m eventstore.Msg) bool {
	r, err := st.Last(ctx, events.RejectionSubject(m.Seq))
	if err != nil {
		return false
	}
	if _, err := kr.VerifySignature(r.Subject, r.Data, r.Header); err != nil {
		return false
	}
	rec, err := events.Unmarshal(r.Data)
	if err != nil {
		return false
	}
	e, isRejection := rec.Event.(events.AuditRejected)
	return isRejection && e.Sequence == m.Seq && e.BodySHA256 == audit.Hash(m.Data)
}

// brokenError answers a write to an aggregate holding an event that does
// not verify.
func brokenError(m eventstore.Msg, err error) error {
	return &domain.Error{Kind: domain.KindUnavailable, Code: "aggregate_held",
		Message: fmt.Sprintf("This resource's history holds an event at sequence %d that does not verify (%v); "+
			"it is served again once an operator has reviewed it (vaultctl audit verify, vaultctl audit reject).", m.Seq, err)}
}
