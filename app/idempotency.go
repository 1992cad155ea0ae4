package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
)

// IdemOutcome is what BeginIdempotent decided.
type IdemOutcome int

// The outcomes of BeginIdempotent.
const (
	IdemProceed  IdemOutcome = iota // run the request with the ticket's Intent, then Finish
	IdemReplay                      // answered before: send the remembered answer
	IdemInFlight                    // another attempt with this key is still running: 409
	IdemMismatch                    // the key was used with another request: 422
)

// IdemAnswer is the record kept under an idempotency key. It never holds a
// secret: the vault's answers never do, and the request is kept only as a
// keyed fingerprint.
type IdemAnswer struct {
	State string `json:"state"` // "pending" or "done"
	// KID names the master key the fingerprint was taken under, so that a
	// master-key rotation does not change how a retry is compared.
	KID         string    `json:"kid"`
	Fingerprint []byte    `json:"fingerprint"`
	StartedAt   time.Time `json:"started_at"` // the first attempt's start
	// Deadline is when the running attempt is given up for dead (its
	// process died or it overran); a retry then takes it over.
	Deadline time.Time `json:"deadline"`
	// ID and EventID are the write's Intent: every attempt uses them.
	ID      string `json:"id"`
	EventID string `json:"event_id"`

	Status      int    `json:"status,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Body        []byte `json:"body,omitempty"`
	Seq         uint64 `json:"seq,omitempty"`
}

// IdemTicket identifies an attempt that BeginIdempotent let proceed.
type IdemTicket struct {
	// Intent is the write's identity, the same for every attempt under the key.
	Intent Intent
	key    string
	rev    uint64
	rec    IdemAnswer
}

// BeginIdempotent claims key for owner and the request fingerprinted by
// request (method, path and body); keys are scoped per owner. ttl is how
// long the attempt may run before a retry may take it over.
func (v *Vault) BeginIdempotent(ctx context.Context, owner events.Owner, key string, ttl time.Duration, request ...[]byte) (IdemOutcome, *IdemAnswer, IdemTicket, error) {
	return v.BeginIdempotentWith(ctx, owner, key, ttl, v.NewIntent(), request...)
}

// BeginIdempotentWith is BeginIdempotent with the intent a first attempt
// records (a credential create's comes from NewCreateIntent). When that
// intent does not proceed (a replay, a conflict, a take-over of an earlier
// attempt, an error), its pooled key is discarded; when it proceeds, the
// caller discards it after the request (DiscardIntent is a no-op once the
// create used it).
func (v *Vault) BeginIdempotentWith(ctx context.Context, owner events.Owner, key string, ttl time.Duration, in Intent,
	request ...[]byte) (outcome IdemOutcome, prev *IdemAnswer, t IdemTicket, err error) {
	defer func() {
		if outcome != IdemProceed || err != nil || t.Intent.key != in.key {
			v.DiscardIntent(in)
		}
	}()
	st := v.Store()
	if st == nil {
		return 0, nil, IdemTicket{}, ErrUnavailable
	}
	// Bounded like a write: when NATS has just gone away unnoticed, the
	// JetStream default (5 s) alone would break "503 within 5 s". Detached
	// from the client like a write: a claim cancelled by a hang-up may be
	// stored nonetheless, and then nothing would run or release it, and
	// every retry would be told 409 until the attempt's deadline.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	sum := sha256.Sum256([]byte(owner.Key() + "\x00" + key))
	now := time.Now().UTC()
	// From here the record may be stored (even when IdemCreate fails), and
	// a retry may take this intent over: its pooled key must then stay.
	in.recorded = true
	t = IdemTicket{key: hex.EncodeToString(sum[:]), Intent: in, rec: IdemAnswer{
		State: "pending", KID: v.Keys.ActiveKID(), Fingerprint: v.Keys.Fingerprint(request...),
		StartedAt: now, Deadline: now.Add(ttl), ID: in.ID.String(), EventID: in.EventID}}
	for attempt := 0; attempt < 3; attempt++ {
		rev, err := st.IdemCreate(ctx, t.key, mustJSON(t.rec))
		if err == nil {
			t.rev = rev
			return IdemProceed, nil, t, nil
		}
		if !errors.Is(err, eventstore.ErrExists) {
			return 0, nil, t, ErrUnavailable
		}
		raw, rev, err := st.IdemGet(ctx, t.key)
		if errors.Is(err, eventstore.ErrKeyNotFound) {
			continue // expired meanwhile
		}
		if err != nil {
			return 0, nil, t, ErrUnavailable
		}
		var prev IdemAnswer
		if err := json.Unmarshal(raw, &prev); err != nil {
			return 0, nil, t, err
		}
		kid := prev.KID
		if kid == "" { // a record from before key ids were kept: the active key's
			kid = v.Keys.ActiveKID()
		}
		fp, ok := v.Keys.FingerprintWith(kid, request...)
		switch {
		case !ok || !hmac.Equal(prev.Fingerprint, fp):
			return IdemMismatch, nil, t, nil
		case prev.State == "done":
			return IdemReplay, &prev, t, nil
		case now.Before(prev.Deadline):
			return IdemInFlight, nil, t, nil
		}
		// The earlier attempt is over without an answer (it died, or its
		// write's outcome was unknown): take it over with its intent. Its
		// event may be stored; the write finds it by its id.
		id, perr := ulid.Parse(prev.ID)
		if perr != nil {
			return 0, nil, t, perr
		}
		taken := prev
		taken.Deadline = now.Add(ttl)
		if rev, err = st.IdemUpdate(ctx, t.key, mustJSON(taken), rev); err == nil {
			t.rev, t.rec = rev, taken
			t.Intent = Intent{ID: id, EventID: prev.EventID, Since: prev.StartedAt}
			return IdemProceed, nil, t, nil
		}
	}
	return IdemInFlight, nil, t, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain data structures are marshalled
	}
	return b
}

// FinishIdempotent remembers the answer of an attempt that proceeded, before
// the answer is sent.
func (v *Vault) FinishIdempotent(ctx context.Context, t IdemTicket, status int, contentType string, body []byte, seq uint64) {
	done := t.rec
	done.State, done.Status, done.ContentType, done.Body, done.Seq = "done", status, contentType, body, seq
	v.updateIdem(ctx, t, done, 2*time.Second)
}

// ReleaseIdempotent ends an attempt whose answer must not be remembered (a
// 5xx, a lost race): the record stays, with the intent, and a retry takes
// it over at once — the write may be stored (an unknown outcome), and the
// retry then finds it and answers it.
func (v *Vault) ReleaseIdempotent(ctx context.Context, t IdemTicket) {
	over := t.rec
	over.Deadline = time.Now().UTC()
	// Bounded tightly: the stream may be the reason for the failure, and
	// the record's own deadline frees the key anyway.
	v.updateIdem(ctx, t, over, time.Second)
}

func (v *Vault) updateIdem(ctx context.Context, t IdemTicket, rec IdemAnswer, timeout time.Duration) {
	st := v.Store()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if _, err := st.IdemUpdate(ctx, t.key, mustJSON(rec), t.rev); err != nil {
		v.Log.Warn("updating an idempotency record failed", "err", err)
	}
}
