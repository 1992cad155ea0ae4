package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
)

// IdemOutcome is what BeginIdempotent decided.
type IdemOutcome int

// The outcomes of BeginIdempotent.
const (
	IdemProceed  IdemOutcome = iota // first time: run the request, then Finish or Abandon
	IdemReplay                      // answered before: send the remembered answer
	IdemInFlight                    // the first request with this key is still running: 409
	IdemMismatch                    // the key was used with another request: 422
)

// IdemAnswer is a remembered answer. It never holds a secret: the vault's
// answers never do, and the request is kept only as a keyed fingerprint.
type IdemAnswer struct {
	State       string    `json:"state"` // "pending" or "done"
	Fingerprint []byte    `json:"fingerprint"`
	StartedAt   time.Time `json:"started_at"`
	Status      int       `json:"status,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Body        []byte    `json:"body,omitempty"`
}

// IdemTicket identifies a request that BeginIdempotent let proceed.
type IdemTicket struct {
	key string
	rev uint64
	fp  []byte
}

// staleAfter is when a pending entry is taken to belong to a crashed API.
const staleAfter = 60 * time.Second

// BeginIdempotent claims key for owner and the request fingerprinted by
// request (method, path and body). Keys are scoped per owner.
func (v *Vault) BeginIdempotent(ctx context.Context, owner events.Owner, key string, request ...[]byte) (IdemOutcome, *IdemAnswer, IdemTicket, error) {
	st := v.Store()
	if st == nil {
		return 0, nil, IdemTicket{}, ErrUnavailable
	}
	// Bounded like an append: when NATS has just gone away unnoticed, the
	// JetStream default (5 s) alone would break "503 within 5 s".
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sum := sha256.Sum256([]byte(owner.Key() + "\x00" + key))
	t := IdemTicket{key: hex.EncodeToString(sum[:]), fp: v.Keys.Fingerprint(request...)}
	pending, _ := json.Marshal(IdemAnswer{State: "pending", Fingerprint: t.fp, StartedAt: time.Now().UTC()})
	for attempt := 0; attempt < 3; attempt++ {
		rev, err := st.IdemCreate(ctx, t.key, pending)
		if err == nil {
			t.rev = rev
			return IdemProceed, nil, t, nil
		}
		if !errors.Is(err, eventstore.ErrExists) {
			return 0, nil, t, ErrUnavailable
		}
		raw, rev, err := st.IdemGet(ctx, t.key)
		if errors.Is(err, eventstore.ErrKeyNotFound) {
			continue // expired or abandoned meanwhile
		}
		if err != nil {
			return 0, nil, t, ErrUnavailable
		}
		var prev IdemAnswer
		if err := json.Unmarshal(raw, &prev); err != nil {
			return 0, nil, t, err
		}
		switch {
		case !hmac.Equal(prev.Fingerprint, t.fp):
			return IdemMismatch, nil, t, nil
		case prev.State == "done":
			return IdemReplay, &prev, t, nil
		case time.Since(prev.StartedAt) < staleAfter:
			return IdemInFlight, nil, t, nil
		}
		// A pending entry from an API that died: take it over.
		if rev, err = st.IdemUpdate(ctx, t.key, pending, rev); err == nil {
			t.rev = rev
			return IdemProceed, nil, t, nil
		}
	}
	return IdemInFlight, nil, t, nil
}

// WithIdempotency returns ctx carrying the ticket's stream message id.
func (t IdemTicket) WithIdempotency(ctx context.Context) context.Context {
	return WithIdempotencyMsgID(ctx, "idem-"+t.key)
}

// FinishIdempotent remembers the answer of a request that proceeded.
func (v *Vault) FinishIdempotent(ctx context.Context, t IdemTicket, status int, contentType string, body []byte) {
	st := v.Store()
	if st == nil {
		return
	}
	done, _ := json.Marshal(IdemAnswer{State: "done", Fingerprint: t.fp, StartedAt: time.Now().UTC(),
		Status: status, ContentType: contentType, Body: body})
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := st.IdemUpdate(ctx, t.key, done, t.rev); err != nil {
		v.Log.Warn("remembering an idempotent answer failed", "err", err)
	}
}

// AbandonIdempotent forgets a request that must be retryable (a 5xx, a lost
// race, a rate limit), so a retry with the same key runs again.
func (v *Vault) AbandonIdempotent(ctx context.Context, t IdemTicket) {
	st := v.Store()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := st.IdemDelete(ctx, t.key, t.rev); err != nil {
		v.Log.Warn("forgetting an idempotency key failed", "err", err)
	}
}

type idemKey struct{}

// WithIdempotencyMsgID makes the appends of ctx use msgID as their
// Nats-Msg-Id, so a retried request is stored once by the stream itself.
func WithIdempotencyMsgID(ctx context.Context, msgID string) context.Context {
	return context.WithValue(ctx, idemKey{}, msgID)
}

func idempotencyMsgID(ctx context.Context) string {
	s, _ := ctx.Value(idemKey{}).(string)
	return s
}
