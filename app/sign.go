package app

import (
	"context"
	"errors"
	"sync"

	"github.com/mcpvault/vault/audit"
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
