package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"time"

	"github.com/mcpvault/vault/apijson"
	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/domain"

	"github.com/mcpvault/vault/events"
)

// CredentialBinding returns the server and owner of a live credential (what
// its data key's wrapping is bound to), for re-wrapping keys.
func (d *DB) CredentialBinding(ctx context.Context, id string) (serverID string, owner events.Owner, err error) {
	err = d.db().QueryRowContext(ctx, "SELECT server_id, account, user FROM credentials WHERE id = ?", id).
		Scan(&serverID, &owner.Account, &owner.User)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	return serverID, owner, err
}

// OwnerServers lists the ids of an owner's servers.
func (d *DB) OwnerServers(ctx context.Context, o events.Owner) ([]string, error) {
	rows, err := d.db().QueryContext(ctx, "SELECT id FROM servers WHERE owner = +? ORDER BY id", o.Key())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Expiring is a live credential with an expiry, as the scheduler sees it.
type Expiring struct {
	ID, ServerID string
	Owner        events.Owner
	ExpiresAt    events.Time
	// Notice is what the stream already holds: 0 nothing, 1 expiring_soon,
	// 2 expired.
	Notice int
}

// ExpiryDue lists live (not revoked) credentials that need an expiry notice
// at now: expired ones (expires_at in (now-horizon, now]) without an expired
// notice, and ones expiring within lead without an expiring_soon notice;
// soonest first, at most limit.
func (d *DB) ExpiryDue(ctx context.Context, now time.Time, lead, horizon time.Duration, limit int) ([]Expiring, error) {
	nowS := events.NewTime(now).String()
	rows, err := d.db().QueryContext(ctx, `SELECT c.id, c.server_id, c.account, c.user, c.expires_at, COALESCE(x.notice, 0)
		FROM credentials c LEFT JOIN credential_expiry x ON x.id = c.id
		WHERE c.expires_at IS NOT NULL AND c.revoked_at IS NULL AND c.expires_at > ? AND c.expires_at <= ?
		  AND COALESCE(x.notice, 0) < CASE WHEN c.expires_at <= ? THEN 2 ELSE 1 END
		ORDER BY c.expires_at, c.id LIMIT ?`,
		events.NewTime(now.Add(-horizon)).String(), events.NewTime(now.Add(lead)).String(), nowS, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Expiring
	for rows.Next() {
		var (
			e  Expiring
			at string
		)
		if err := rows.Scan(&e.ID, &e.ServerID, &e.Owner.Account, &e.Owner.User, &at, &e.Notice); err != nil {
			return nil, err
		}
		e.ExpiresAt = parseTime(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Statements the projector runs for the audit branch's events (prepared
// with the others, see applyStatements).
const (
	upsertExpiryNotice = "INSERT INTO credential_expiry (id, notice) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET notice = max(notice, excluded.notice)"
	deleteOwnerCreds   = "DELETE FROM credentials WHERE owner = ?"
	deleteOwnerServers = "DELETE FROM servers WHERE owner = ?"
	insertRejection    = "INSERT OR IGNORE INTO audit_rejections (seq, body_sha256) VALUES (?, ?)"
	updateHeldHeader   = "UPDATE held_events SET header = ? WHERE seq = ?"
	selectRejection    = "SELECT body_sha256 FROM audit_rejections WHERE seq = ?"
	selectHead         = "SELECT head FROM audit_heads WHERE subject = ?"
	selectHeads        = "SELECT subject, head FROM audit_heads WHERE subject IN (SELECT value FROM json_each(?))"
	insertBreak        = "INSERT OR IGNORE INTO audit_breaks (seq, problem) VALUES (?, ?)"
	selectBreak        = "SELECT problem FROM audit_breaks WHERE seq = ?"
	upsertHeads        = "INSERT INTO audit_heads (subject, head) SELECT key, value FROM json_each(?) WHERE true ON CONFLICT(subject) DO UPDATE SET head = excluded.head"
)

// applyCustody applies the expiry and erasure events.
func (a *applier) applyCustody(r events.Record) error {
	switch r.Event.(type) {
	case events.CredentialExpiringSoon:
		return a.exec(upsertExpiryNotice, r.AggregateID, 1)
	case events.CredentialExpired:
		return a.exec(upsertExpiryNotice, r.AggregateID, 2)
	case events.AuditRejected:
		// Recorded (signed: unsigned rejections were held by DecodeVerified);
		// Apply then releases the held trees, without the rejected event.
		e := r.Event.(events.AuditRejected)
		a.rejected = true
		return a.exec(insertRejection, e.Sequence, e.BodySHA256)
	case events.OwnerErased:
		// The erase deleted the owner's servers with their own events first;
		// this also removes any the erase raced with.
		if err := a.exec(deleteOwnerCreds, r.Owner.Key()); err != nil {
			return err
		}
		return a.exec(deleteOwnerServers, r.Owner.Key())
	}
	return nil
}

// VerifyWith makes Release check the audit signature of every held event
// before it applies it (the projector verifies live events while decoding,
// see service.DecodeVerified): a held event that does not verify stays held
// until an operator rejects its sequence. Unsigned events up to
// unsignedUntil are accepted, as the projector accepts them
// (VAULT_AUDIT_UNSIGNED_UNTIL: a stream written before events were signed).
func (d *DB) VerifyWith(keys *audit.Keyring, unsignedUntil uint64) {
	d.audit, d.unsignedUntil = keys, unsignedUntil
}

// checkChain verifies, when the DB verifies, the chain link of a signed
// state-changing message against the head of its subject (the message
// before it there, whatever its validity); a link that does not match — a
// replayed or reordered copy — becomes the message's Err, so Apply holds its
// tree. Every message then becomes its subject's head. Messages without a
// signature were already held (or are legacy) and are not checked here.
func (a *applier) checkChain(m *Msg) error {
	if a.d.audit == nil {
		return nil
	}
	if a.heads == nil {
		a.heads = map[string]string{}
	}
	prev, ok := a.heads[m.Subject]
	if !ok {
		err := a.queryRow(selectHead, m.Subject).Scan(&prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	head := m.head
	if head == "" {
		head = audit.Head(m.Seq, m.Data)
	}
	a.heads[m.Subject] = head
	h := msgHeader(m.Header)
	if m.Err != nil || h.Get(audit.HeaderSig) == "" || !audit.Chained(m.Type) {
		return nil
	}
	want := audit.First
	if prev != "" {
		want = prev
	}
	if got := h.Get(audit.HeaderChain); got != want {
		err := audit.ErrChain
		if got == "" {
			err = audit.ErrUnchained
		}
		m.Err = &audit.Break{Seq: m.Seq, Subject: m.Subject, Err: err}
	}
	return nil
}

// loadHeads reads, in one query, the chain heads of the subjects of msgs
// that this transaction has not read yet ("" for a subject without one),
// so that checkChain need not ask per message.
func (a *applier) loadHeads(msgs []Msg) error {
	if a.d.audit == nil {
		return nil
	}
	if a.heads == nil {
		a.heads = make(map[string]string, len(msgs))
	}
	var subjects []string
	for i := range msgs {
		if _, ok := a.heads[msgs[i].Subject]; !ok {
			a.heads[msgs[i].Subject] = ""
			subjects = append(subjects, msgs[i].Subject)
		}
	}
	if len(subjects) == 0 {
		return nil
	}
	// Appended, not json.Marshal'd: this runs on the apply goroutine, once
	// per batch of thousands of subjects.
	list := make([]byte, 0, len(subjects)*(len(subjects[0])+3)+2)
	list = append(list, '[')
	for i, s := range subjects {
		if i > 0 {
			list = append(list, ',')
		}
		list = apijson.AppendString(list, s)
	}
	list = append(list, ']')
	rows, err := a.query(selectHeads, list)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var subject, head string
		if err := rows.Scan(&subject, &head); err != nil {
			return err
		}
		a.heads[subject] = head
	}
	return rows.Err()
}

// noteBreak remembers that a held message did not verify, so that Release
// never applies it unless an operator rejects it.
func (a *applier) noteBreak(m *Msg) error {
	var b *audit.Break
	if !errors.As(m.Err, &b) {
		return nil
	}
	return a.exec(insertBreak, m.Seq, b.Err.Error())
}

// finishHeads writes the chain heads moved in this transaction, in one
// statement (a batch's thousand subjects in one call into SQLite, not a
// thousand).
func (a *applier) finishHeads() error {
	// A JSON object appended by hand, not a map json.Marshal'd (which sorts
	// the keys): this runs on the apply goroutine, once per batch.
	var list []byte
	for subject, head := range a.heads {
		if head == "" { // loaded, no message of it applied
			continue
		}
		if list == nil {
			list = make([]byte, 0, len(a.heads)*(len(subject)+len(head)+6)+2)
			list = append(list, '{')
		} else {
			list = append(list, ',')
		}
		list = apijson.AppendString(list, subject)
		list = append(list, ':')
		list = apijson.AppendString(list, head)
	}
	if list == nil {
		return nil
	}
	list = append(list, '}')
	return a.exec(upsertHeads, list)
}

// keepHeader stores the headers of a kept message beside it.
func (a *applier) keepHeader(m *Msg) error {
	if len(m.Header) == 0 {
		return nil
	}
	h, err := json.Marshal(m.Header)
	if err != nil {
		return err
	}
	return a.exec(updateHeldHeader, h, m.Seq)
}

// releaseCheck decides, on release, about a kept message that decodes: skip
// it (true) when an operator rejected it (the same body), hold it (m.Err set)
// when it does not verify, apply it otherwise.
func (a *applier) releaseCheck(m *Msg) (bool, error) {
	var want string
	err := a.queryRow(selectRejection, m.Seq).Scan(&want)
	switch {
	case err == nil:
		if want == audit.Hash(m.Data) {
			return true, nil
		}
	case !errors.Is(err, sql.ErrNoRows):
		return false, err
	}
	var problem string
	switch err := a.queryRow(selectBreak, m.Seq).Scan(&problem); {
	case err == nil:
		m.Err = &audit.Break{Seq: m.Seq, Subject: m.Subject, Err: errors.New(problem)}
		return false, nil
	case !errors.Is(err, sql.ErrNoRows):
		return false, err
	}
	if a.d.audit == nil {
		return false, nil
	}
	var raw []byte
	if err := a.tx.QueryRowContext(a.ctx, "SELECT header FROM held_events WHERE seq = ?", m.Seq).Scan(&raw); err != nil {
		return false, err
	}
	var h msgHeader
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &h); err != nil {
			return false, err
		}
	}
	if m.Seq <= a.d.unsignedUntil && h.Get(audit.HeaderSig) == "" {
		return false, nil // written before events were signed
	}
	if _, err := a.d.audit.VerifySignature(m.Subject, m.Data, h); err != nil {
		m.Err = &audit.Break{Seq: m.Seq, Subject: m.Subject, Err: err}
	}
	return false, nil
}

// msgHeader reads stored NATS headers.
type msgHeader map[string][]string

// Get returns the first value of key.
func (h msgHeader) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	if v := h[textproto.CanonicalMIMEHeaderKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// heldForBreak is the answer for a tree held at an event that did not verify
// (nil when the hold has another reason).
func heldForBreak(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, serverID string, seq uint64) error {
	var problem string
	if q.QueryRowContext(ctx, "SELECT problem FROM audit_breaks WHERE seq = +?", seq).Scan(&problem) != nil {
		return nil
	}
	return &domain.Error{Kind: domain.KindUnavailable, Code: "aggregate_held", Message: fmt.Sprintf(
		"This MCP server is held at stream sequence %d: that event does not verify (%s). "+
			"It is served again once an operator has reviewed it (vaultctl audit verify, vaultctl audit reject).", seq, problem)}
}
