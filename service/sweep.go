package service

import (
	"context"
	"encoding/json"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
)

// sweeper runs Sweep every SweepInterval until ctx ends.
func (p *Projector) sweeper(ctx context.Context, st *eventstore.Store, db *projections.DB) {
	every := p.SweepInterval
	if every == 0 {
		every = 10 * time.Minute
	}
	if every < 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := p.Sweep(ctx, st, db)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			p.Log.Warn("sweeping the keys stream failed; next sweep in one interval", "err", err)
		case n > 0:
			p.Log.Info("sweep found data keys to destroy", "keys", n)
			p.wakeShredder()
		}
	}
}

// Sweep lists the data keys in the keys stream and records for destruction
// every key whose credential is revoked or deleted (itself or with its
// server), and every key older than SweepGrace that no credential event
// names (the leftover of a create whose event was never stored). Keys of
// live credentials, of credentials the read model has not seen yet, and of
// held server trees are kept. It returns how many keys it recorded.
func (p *Projector) Sweep(ctx context.Context, st *eventstore.Store, db *projections.DB) (int, error) {
	keys, err := st.ListKeys(ctx)
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.CredentialID
	}
	states, err := db.CredentialStates(ctx, ids)
	if err != nil {
		return 0, err
	}
	pending, err := db.PendingShreds(ctx, -1)
	if err != nil {
		return 0, err
	}
	already := make(map[string]bool, len(pending))
	for _, ps := range pending {
		already[ps.CredentialID] = true
	}
	grace := p.SweepGrace
	if grace == 0 {
		grace = 25 * time.Hour
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	var due []string
	for _, k := range keys {
		id := k.CredentialID
		switch {
		case already[id] || states[id] == projections.CredentialLive:
			continue
		case states[id] == projections.CredentialRevoked:
			due = append(due, id)
			continue
		case now().Sub(k.Stored) < grace:
			continue // a create may still be on its way, or not projected yet
		}
		gone, err := p.credentialGone(ctx, st, db, id)
		if err != nil {
			return 0, err
		}
		if gone {
			due = append(due, id)
		}
	}
	if len(due) == 0 {
		return 0, nil
	}
	return len(due), db.RecordShreds(ctx, 0, due)
}

// credentialGone decides from the event stream (the read model has no row)
// whether the credential's key must go: no event names the credential (a
// failed create), its last event revokes or deletes it, or its server was
// deleted. A credential that is live in the stream, or under a held server,
// keeps its key.
func (p *Projector) credentialGone(ctx context.Context, st *eventstore.Store, db *projections.DB, id string) (bool, error) {
	subject, data, found, err := st.LastEvent(ctx, events.SubjectPrefix+"*.credential."+id)
	if err != nil {
		return false, err
	}
	if !found {
		return true, nil
	}
	server := projections.TreeOf(subject)
	if held, err := db.IsHeld(ctx, server); err != nil || held {
		return false, err
	}
	switch envelopeType(data) {
	case events.TypeCredentialRevoked, events.TypeCredentialDeleted:
		return true, nil
	case events.TypeCredentialCreated, events.TypeCredentialUsed:
	default:
		return false, nil // an event this build does not know: keep
	}
	_, sdata, found, err := st.LastEvent(ctx, events.ServerSubject(server))
	if err != nil || !found {
		return false, err
	}
	return envelopeType(sdata) == events.TypeServerDeleted, nil
}

func envelopeType(data []byte) string {
	var env struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(data, &env)
	return env.Type
}
