package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
)

// Limits are the operator's caps on what one owner may create
// (VAULT_MAX_SERVERS_PER_OWNER, VAULT_MAX_CREDENTIALS_PER_SERVER). Zero
// turns a cap off; both are off by default.
//
// Decisions never read the read model: each capped count is a counter in a
// JetStream key-value bucket (<stream>_COUNTERS), changed by compare-and-set
// only, so API replicas never let a count pass its cap.
//
// Cost. Off: one integer comparison per create or delete, no I/O, no bucket.
// On: a create adds one KV get and one compare-and-set write (two round trips
// to the stream leader, one replicated message) before its event is appended;
// a delete adds the same to give the slot back, after its event is stored.
// Counting starts when a cap is first configured (aggregates created before
// it are not counted).
//
// Certainty. A slot is taken before the event is appended and given back if
// the append certainly stored nothing. A crash between the two keeps the slot
// taken (the count can run high by the writes in flight at the crash, never
// low), so a cap is never exceeded.
type Limits struct {
	ServersPerOwner      int
	CredentialsPerServer int
	// Refused, when set, is called with the limit's name on each refusal
	// (metrics.LimitRefused).
	Refused func(limit string)
}

// limitState is the counters bucket, opened on first use.
type limitState struct {
	mu       sync.Mutex
	counters *eventstore.Counters
	store    *eventstore.Store
}

// slot names one capped count.
type slot struct {
	name  string // the limit's name, for errors and metrics
	key   string // the counter key
	max   int    // 0 = off
	label string // what the limit is about, for the message
}

// ownerKey names an owner in counter keys (a hash: owners are free text).
func ownerKey(owner events.Owner) string {
	h := sha256.Sum256([]byte(owner.Account + "\x00" + owner.User))
	return hex.EncodeToString(h[:16])
}

// serverSlot is the count of an owner's servers.
func (v *Vault) serverSlot(owner events.Owner) slot {
	return slot{name: "servers_per_owner", key: "servers." + ownerKey(owner),
		max: v.Limits.ServersPerOwner, label: "servers for this owner"}
}

// credentialSlot is the count of the credentials of the owner's server. The
// owner is part of the key, so that another owner naming the server counts
// on a key of its own and gets the same 404 as for any unknown server, never
// a 409 that would reveal the server.
func (v *Vault) credentialSlot(owner events.Owner, serverID string) slot {
	return slot{name: "credentials_per_server", key: "credentials." + ownerKey(owner) + "." + serverID,
		max: v.Limits.CredentialsPerServer, label: "credentials for this server"}
}

// ErrLimitReached is the answer to a create over an operator limit.
func limitReached(s slot) error {
	return &domain.Error{Kind: domain.KindConflict, Code: "limit_reached",
		Message: fmt.Sprintf("The limit of %d %s is reached; delete some before creating more.", s.max, s.label)}
}

func (v *Vault) counters(ctx context.Context) (*eventstore.Counters, error) {
	st := v.Store()
	if st == nil {
		return nil, ErrUnavailable
	}
	v.limits.mu.Lock()
	defer v.limits.mu.Unlock()
	if v.limits.counters != nil && v.limits.store == st {
		return v.limits.counters, nil
	}
	c, err := eventstore.OpenCounters(ctx, st)
	if err != nil {
		v.Log.Warn("operator-limit counters unavailable", "err", err)
		return nil, ErrUnavailable
	}
	v.limits.counters, v.limits.store = c, st
	return c, nil
}

// underLimit runs write (the append of a create) holding one slot of s: it
// answers 409 limit_reached when s is full, and gives the slot back when
// write certainly stored nothing. With s off it only runs write.
func (v *Vault) underLimit(ctx context.Context, s slot, write func() error) error {
	if s.max <= 0 {
		return write()
	}
	c, err := v.counters(ctx)
	if err != nil {
		return err
	}
	switch err := c.Reserve(ctx, s.key, s.max); {
	case errors.Is(err, eventstore.ErrLimitReached):
		if v.Limits.Refused != nil {
			v.Limits.Refused(s.name)
		}
		return limitReached(s)
	case err != nil:
		v.Log.Warn("operator-limit counter unavailable", "limit", s.name, "err", err)
		return ErrUnavailable
	}
	err = write()
	if err != nil && !errors.Is(err, ErrOutcomeUnknown) { // certainly not stored
		v.releaseSlot(ctx, s)
	}
	return err
}

// releaseSlot gives one slot of s back after a delete is stored (or a
// create stored nothing). A failure leaves the count high, never low.
func (v *Vault) releaseSlot(ctx context.Context, s slot) {
	if s.max <= 0 {
		return
	}
	c, err := v.counters(ctx)
	if err == nil {
		err = c.Release(context.WithoutCancel(ctx), s.key)
	}
	if err != nil {
		v.Log.Warn("operator-limit counter not released; the count stays high", "limit", s.name, "err", err)
	}
}

// forgetSlot drops the count of s (its server is deleted).
func (v *Vault) forgetSlot(ctx context.Context, s slot) {
	if s.max <= 0 {
		return
	}
	c, err := v.counters(ctx)
	if err == nil {
		err = c.Forget(context.WithoutCancel(ctx), s.key)
	}
	if err != nil {
		v.Log.Warn("operator-limit counter not dropped", "limit", s.name, "err", err)
	}
}
