package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
)

// opWriter is what the commands that append need: the store (keys stream
// included), a reader for signed publishes, and the audit signing keys.
type opWriter struct {
	nc    *nats.Conn
	store *eventstore.Store
	r     *eventstore.Reader
	sign  *audit.Keyring
}

func (c *cli) openWriter(ctx context.Context) (*opWriter, error) {
	nc, r, err := c.connect(ctx, "api")
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := eventstore.Open(octx, nc, eventstore.Config{Stream: c.cfg.Stream, Replicas: c.cfg.Replicas})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: %v", eventstore.ErrUnavailable, err)
	}
	kr, _, err := c.cfg.AuditKeys()
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &opWriter{nc: nc, store: st, r: r, sign: kr}, nil
}

func (w *opWriter) Close() { w.nc.Close() }

// appendSigned appends an operator event, signed; chained when its type is.
func (w *opWriter) appendSigned(ctx context.Context, subject string, m events.Meta, e events.Event) (uint64, error) {
	m.ID = ulid.MustNew(ulid.Timestamp(m.OccurredAt.Time), rand.Reader).String()
	body, err := events.Marshal(m, e)
	if err != nil {
		return 0, err
	}
	link := audit.Unchained
	if audit.Chained(e.EventType()) {
		prev, err := w.r.LastOnSubject(ctx, subject)
		if err != nil {
			return 0, err
		}
		link = audit.After(prev.Seq, prev.Data)
	}
	return w.r.Publish(ctx, subject, body, w.sign.Sign(subject, body, link), m.ID)
}

// rotation is what keys rotate did.
type rotation struct {
	events.KeysRewrapped
	Cleaned  int    `json:"old_versions_destroyed"`
	Gone     int    `json:"destroyed_meanwhile"`
	Orphaned int    `json:"orphaned"`
	Total    uint64 `json:"keys_seen"`
	Seq      uint64 `json:"event_seq"`
}

func (c *cli) keysRotate(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return usageError{"keys rotate takes no arguments (the new key is the first of VAULT_MASTER_KEYS)"}
	}
	kr, _, err := c.cfg.MasterKeys()
	if err != nil {
		return err
	}
	w, err := c.openWriter(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	var db *projections.DB // opened on the first data key that a master key wraps directly
	defer func() {
		if db != nil {
			db.Close()
		}
	}()
	total, err := w.store.KeyCount(ctx)
	if err != nil {
		return err
	}
	res := rotation{KeysRewrapped: events.KeysRewrapped{MasterKID: kr.ActiveKID(), RetiredKIDs: []string{}}}
	prog, done := c.progressBar("re-wrapping keys under " + kr.ActiveKID())
	stillOld := 0
	err = w.store.ForEachKey(ctx, func(k eventstore.KeyVersion) error {
		res.Total++
		if prog != nil {
			prog(res.Total, max(total, res.Total))
		}
		if !k.Current {
			// An older version left by an interrupted re-wrap.
			res.Cleaned++
			return w.store.DestroyKeyVersion(ctx, k.Seq)
		}
		for attempt := 0; ; attempt++ {
			var (
				next    []byte
				changed bool
				err     error
			)
			switch k.Kind {
			case "owner":
				next, changed, err = kr.RewrapOwnerKey(k.Data)
			case "dek":
				next, changed, err = rewrapDEK(ctx, c, &db, kr, k)
				if errors.Is(err, projections.ErrNotFound) {
					res.Orphaned++ // its credential is gone; the projector destroys the key
					stillOld++
					return nil
				}
			default:
				return nil
			}
			if err != nil {
				return fmt.Errorf("key on %s does not open with VAULT_MASTER_KEYS (is its old master key still listed?): %w", k.Subject, err)
			}
			if !changed {
				res.AlreadyCurrent++
				return nil
			}
			err = w.store.ReplaceKey(ctx, k, next)
			if err == nil {
				if k.Kind == "owner" {
					res.OwnerKeys++
				} else {
					res.DataKeys++
				}
				return nil
			}
			if !errors.Is(err, eventstore.ErrConflict) || attempt > 5 {
				return err
			}
			// Changed meanwhile (destroyed by a revoke or an erase, or
			// re-wrapped by another run): look again.
			cur, ok, err := w.store.CurrentKey(ctx, k.Subject)
			if err != nil {
				return err
			}
			if !ok {
				res.Gone++
				return nil
			}
			k = cur
		}
	})
	done()
	if err != nil {
		return err
	}
	if stillOld == 0 {
		for _, kid := range kr.KIDs()[1:] {
			res.RetiredKIDs = append(res.RetiredKIDs, kid)
		}
		slices.Sort(res.RetiredKIDs)
	}
	now := events.NewTime(time.Now())
	res.Seq, err = w.appendSigned(ctx, events.KeysSubject, events.Meta{AggregateID: events.KeyringAggregate,
		Owner: events.Owner{Account: "operator"}, OccurredAt: now}, res.KeysRewrapped)
	if err != nil {
		return err
	}
	if c.json {
		c.emit(res)
		return nil
	}
	fmt.Fprintf(c.stdout, "re-wrapped %d owner keys and %d data keys under %s (%d already were, %d old versions destroyed, %d destroyed meanwhile); recorded at sequence %d\n",
		res.OwnerKeys, res.DataKeys, res.MasterKID, res.AlreadyCurrent, res.Cleaned, res.Gone, res.Seq)
	if len(res.RetiredKIDs) > 0 {
		fmt.Fprintf(c.stdout, "no stored key depends on %v any more: remove it from VAULT_MASTER_KEYS\n", res.RetiredKIDs)
	} else if res.Orphaned > 0 {
		fmt.Fprintf(c.stdout, "%d data keys of deleted credentials are not re-wrapped; keep the old master keys until the projector has destroyed them\n", res.Orphaned)
	}
	return nil
}

// rewrapDEK re-wraps a data key that a master key wraps directly (written
// before owner keys), looking up what it is bound to in the read model.
func rewrapDEK(ctx context.Context, c *cli, db **projections.DB, kr *seal.Keyring, k eventstore.KeyVersion) ([]byte, bool, error) {
	var wk seal.WrappedKey
	if err := json.Unmarshal(k.Data, &wk); err != nil {
		return nil, false, err
	}
	if wk.KID == kr.ActiveKID() || strings.HasPrefix(wk.KID, seal.OwnerKIDPrefix) {
		return k.Data, false, nil
	}
	if *db == nil {
		d, err := projections.Open(ctx, c.cfg.ReadModelPath, projections.Reader)
		if err != nil {
			return nil, false, err
		}
		*db = d
	}
	srv, owner, err := (*db).CredentialBinding(ctx, k.ID)
	if err != nil {
		return nil, false, err
	}
	nw, changed, err := kr.RewrapDataKey(seal.Binding{CredentialID: k.ID, ServerID: srv, Owner: owner}, wk)
	if err != nil || !changed {
		return k.Data, false, err
	}
	out, err := json.Marshal(nw)
	return out, true, err
}
