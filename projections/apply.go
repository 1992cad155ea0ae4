package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// ErrGap is returned by Apply when a message's sequence is beyond the next one
// the read model expects: the caller must resume from AppliedSeq()+1.
var ErrGap = errors.New("projections: sequence gap")

// Msg is one stored message of the event stream as Apply takes it: decoded
// when this build knows its event, otherwise with the reason in Err.
type Msg struct {
	Seq     uint64
	Subject string
	// Data is the body as stored; it is kept in the read model while the
	// message's server tree is held.
	Data []byte
	// Record is the decoded event (valid when Err is nil).
	Record events.Record
	// Err says why this build cannot decode the message.
	Err error
	// Type and Version are the envelope's, when it is readable.
	Type    string
	Version int
	// Owner is the envelope's owner key, when it is readable.
	Owner string
	// Header is the message's headers (the audit signature), kept with the
	// message while its tree is held.
	Header map[string][]string
	// row is the row a create writes, mapped by Decode (off the apply path).
	row []any
	// head is audit.Head of the message, hashed by Decode (off the apply
	// path); "" when the message was not made by Decode.
	head string
}

// Decode decodes one stored message. It touches no database, so the caller
// can decode the next batch while Apply commits the current one.
func Decode(seq uint64, subject string, data []byte) Msg {
	m := Msg{Seq: seq, Subject: subject, Data: data, head: audit.Head(seq, data)}
	r, ok := fastDecode(data)
	var err error
	if !ok {
		r, err = events.Unmarshal(data)
	}
	if err != nil {
		m.Err = err
		var env struct {
			Type    string       `json:"type"`
			Version int          `json:"version"`
			Owner   events.Owner `json:"owner"`
		}
		if json.Unmarshal(data, &env) == nil {
			m.Type, m.Version = env.Type, env.Version
			if env.Owner.Account != "" {
				m.Owner = env.Owner.Key()
			}
		}
		return m
	}
	r.Sequence = seq
	m.Record = r
	m.Type, m.Version = r.Event.EventType(), r.Event.SchemaVersion()
	// A create's row depends on the event alone: map it here, where the
	// caller decodes the next batch while the current one commits.
	switch r.Event.(type) {
	case events.CredentialCreated:
		m.row = credentialArgs(domain.ApplyCredential(domain.Credential{}, r))
	case events.ServerCreated:
		m.row = serverArgs(domain.ApplyServer(domain.Server{}, r), seq)
	}
	return m
}

// TreeOf is the server tree a subject belongs to: the server id in
// vault.<server_id>.…, or the whole subject when it has no such token.
func TreeOf(subject string) string {
	rest, ok := strings.CutPrefix(subject, events.SubjectPrefix)
	if !ok {
		return subject
	}
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		rest = rest[:i]
	}
	if rest == "" {
		return subject
	}
	return rest
}

// Applied reports what one Apply did.
type Applied struct {
	LastSeq uint64
	// Shredded lists credentials whose data-key destruction was recorded in
	// pending_shreds by this call (the caller destroys them, see PendingShreds).
	Shredded []string
	// Held lists the server trees this call started holding.
	Held []Hold
	// Released lists the server trees this call released: by Release, or
	// by Apply when it applied an operator's rejection (mcp.audit.rejected)
	// of the event a tree was held at.
	Released []string
}

// Hold is a server tree the projector holds because this build cannot decode
// one of its events.
type Hold struct {
	ServerID string `json:"server_id"`
	// Seq is the sequence of the first event not applied.
	Seq       uint64 `json:"sequence"`
	EventType string `json:"event_type"`
	Version   int    `json:"event_version"`
	// Reason is why the event could not be decoded (it holds no event data).
	Reason string `json:"reason"`
	// Pending is how many events of the tree are kept, the held one included.
	Pending int `json:"pending_events"`
}

// Apply applies msgs in stream order in one transaction, together with the
// new last sequence, so a crash never leaves half a batch. Messages at or
// below the stored last sequence are skipped (redelivery is harmless).
//
// A message this build cannot decode is never skipped: its server tree is
// held at that sequence (held_aggregates), it and every later message of the
// tree are kept (held_events) to be applied in order by Release, and every
// other tree keeps being applied. Revokes, credential deletes and server
// deletes record the data keys to destroy in pending_shreds in the same
// transaction.
func (d *DB) Apply(ctx context.Context, msgs []Msg) (Applied, error) {
	var out Applied
	if len(msgs) == 0 {
		last, err := d.AppliedSeq(ctx)
		out.LastSeq = last
		return out, err
	}
	tx, err := d.beginWrite(ctx)
	if err != nil {
		return Applied{}, err
	}
	defer tx.Rollback()
	a := d.newApplier(ctx, tx)
	if err := a.queryRow(selectLastSeq).Scan(&out.LastSeq); err != nil {
		return Applied{}, err
	}
	start := out.LastSeq
	held, err := a.heldTrees()
	if err != nil {
		return Applied{}, err
	}
	if err := a.loadHeads(msgs); err != nil { // projections/custody.go
		return Applied{}, err
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Seq <= out.LastSeq {
			continue
		}
		if m.Seq != out.LastSeq+1 {
			if out.LastSeq == start {
				return Applied{}, fmt.Errorf("%w: at %d, got %d", ErrGap, out.LastSeq, m.Seq)
			}
			break // commit what is contiguous; the caller resumes
		}
		tree := TreeOf(m.Subject)
		if err := a.checkChain(m); err != nil { // projections/custody.go
			return Applied{}, err
		}
		switch {
		case held[tree]:
			if err := a.keep(tree, m); err != nil {
				return Applied{}, err
			}
			// A kept message that does not verify stays held when the
			// tree is released, unless it is rejected too.
			if err := a.noteBreak(m); err != nil { // projections/custody.go
				return Applied{}, err
			}
		case m.Err != nil:
			h := Hold{ServerID: tree, Seq: m.Seq, EventType: m.Type, Version: m.Version, Reason: m.Err.Error(), Pending: 1}
			if err := a.exec(insertHold, h.ServerID, nullable(m.Owner), h.Seq, h.EventType, h.Version, h.Reason,
				time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
				return Applied{}, err
			}
			if err := a.keep(tree, m); err != nil {
				return Applied{}, err
			}
			if err := a.noteBreak(m); err != nil { // projections/custody.go
				return Applied{}, err
			}
			held[tree] = true
			out.Held = append(out.Held, h)
		default:
			if err := a.apply(m.Record, m.row); err != nil {
				return Applied{}, fmt.Errorf("projections: apply seq %d (%s): %w", m.Seq, m.Type, err)
			}
		}
		out.LastSeq = m.Seq
	}
	if out.LastSeq == start {
		return out, nil
	}
	if a.rejected {
		// An operator rejected an event: the trees it held are released in
		// this transaction, so no reader sees the rejection applied and
		// its tree still held.
		for _, tree := range slices.Sorted(maps.Keys(held)) {
			_, released, err := a.releaseTree(tree) // projections/held.go
			if err != nil {
				return Applied{}, err
			}
			if released {
				out.Released = append(out.Released, tree)
			}
		}
	}
	if err := a.finish(); err != nil {
		return Applied{}, err
	}
	if err := a.exec(setLastSeq, out.LastSeq); err != nil {
		return Applied{}, err
	}
	if err := tx.Commit(); err != nil {
		return Applied{}, err
	}
	out.Shredded = a.shredded
	return out, nil
}

const (
	insertServer = "INSERT OR REPLACE INTO servers (" + serverColumnsInsert + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
	insertCred   = "INSERT OR REPLACE INTO credentials (" + credentialColumnsInsert + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"

	serverColumnsInsert = `id, owner, account, user, name, server_label, server_url, server_description,
	allowed_tools, require_approval, metadata, created_at, updated_at, tree_seq, tools_changed_at`
	credentialColumnsInsert = `id, server_id, owner, account, user, name, auth_type, authorization_preview,
	header_names, expires_at, last_used_at, created_at, updated_at, revoked_at, secret, doc`
)

const (
	selectLastSeq    = "SELECT last_seq FROM projector_state WHERE id = 1"
	bumpTree         = "UPDATE servers SET tree_seq = ? WHERE id = ?"
	setLastSeq       = "UPDATE projector_state SET last_seq = ? WHERE id = 1"
	selectServer     = "SELECT " + serverColumns + " FROM servers WHERE id = ?"
	existsServer     = "SELECT count(*) FROM servers WHERE id = ?"
	selectCred       = "SELECT " + credentialColumns + " FROM credentials WHERE id = ?"
	selectTreeCreds  = "SELECT id FROM credentials WHERE server_id = ?"
	deleteCreds      = "DELETE FROM credentials WHERE server_id = ?"
	deleteServer     = "DELETE FROM servers WHERE id = ?"
	deleteCred       = "DELETE FROM credentials WHERE id = ?"
	insertShred      = "INSERT OR IGNORE INTO pending_shreds (credential_id, seq) VALUES (?, ?)"
	selectHeldTrees  = "SELECT server_id FROM held_aggregates"
	insertHold       = "INSERT INTO held_aggregates (server_id, owner, seq, event_type, event_version, reason, held_at) VALUES (?,?,?,?,?,?,?)"
	insertHeldEvent  = "INSERT OR REPLACE INTO held_events (seq, server_id, subject, data) VALUES (?,?,?,?)"
	selectHeldEvents = "SELECT seq, subject, data FROM held_events WHERE server_id = ? ORDER BY seq"
	deleteHeldUpTo   = "DELETE FROM held_events WHERE server_id = ? AND seq <= ?"
	updateHold       = "UPDATE held_aggregates SET seq = ?, event_type = ?, event_version = ?, reason = ? WHERE server_id = ?"
	deleteHold       = "DELETE FROM held_aggregates WHERE server_id = ?"
)

// applyStatements are prepared once per writer.
var applyStatements = []string{selectLastSeq, insertServer, insertCred, bumpTree, setLastSeq, selectServer,
	existsServer, selectCred, selectTreeCreds, deleteCreds, deleteServer, deleteCred, insertShred,
	selectHeldTrees, insertHold, insertHeldEvent, selectHeldEvents, deleteHeldUpTo, updateHold, deleteHold,
	upsertExpiryNotice, deleteOwnerCreds, deleteOwnerServers, insertRejection, updateHeldHeader, selectRejection,
	selectHead, selectHeads, upsertHeads, insertBreak, selectBreak} // the last eleven: projections/custody.go

// applier applies the messages of one transaction. The newest sequence per
// server tree is written once per transaction, not once per event, and
// statements are bound to the transaction once.
type applier struct {
	ctx      context.Context
	tx       *sql.Tx
	d        *DB
	stmts    map[string]*sql.Stmt
	trees    map[string]uint64
	servers  map[string]bool // known to exist (true) or not (false) in this transaction
	shredded []string
	rejected bool // an mcp.audit.rejected was applied (projections/custody.go)
	heads    map[string]string
}

// newApplier runs its statements without ctx's cancellation: go-sqlite3
// runs each statement executed under a cancellable context in a goroutine
// of its own and waits for it, a hand-over per insert that the decoding
// goroutines delay. A cancelled ctx still ends the transaction (BeginTx),
// and a batch's statements are short.
func (d *DB) newApplier(ctx context.Context, tx *sql.Tx) *applier {
	return &applier{ctx: context.WithoutCancel(ctx), tx: tx, d: d, stmts: map[string]*sql.Stmt{}, trees: map[string]uint64{}, servers: map[string]bool{}}
}

// stmt returns the writer's prepared statement for query, bound to the
// transaction (once per transaction).
func (a *applier) stmt(query string) (*sql.Stmt, error) {
	if st, ok := a.stmts[query]; ok {
		return st, nil
	}
	st, err := a.d.stmt(query)
	if err != nil {
		return nil, err
	}
	st = a.tx.StmtContext(a.ctx, st)
	a.stmts[query] = st
	return st, nil
}

func (a *applier) exec(query string, args ...any) error {
	st, err := a.stmt(query)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(a.ctx, args...)
	return err
}

func (a *applier) queryRow(query string, args ...any) *sql.Row {
	st, err := a.stmt(query)
	if err != nil {
		return a.tx.QueryRowContext(a.ctx, query, args...)
	}
	return st.QueryRowContext(a.ctx, args...)
}

func (a *applier) query(query string, args ...any) (*sql.Rows, error) {
	st, err := a.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(a.ctx, args...)
}

func (a *applier) heldTrees() (map[string]bool, error) {
	rows, err := a.query(selectHeldTrees)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	held := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		held[id] = true
	}
	return held, rows.Err()
}

// keep stores a message of a held tree.
func (a *applier) keep(tree string, m *Msg) error {
	if err := a.exec(insertHeldEvent, m.Seq, tree, m.Subject, m.Data); err != nil {
		return err
	}
	return a.keepHeader(m) // projections/custody.go
}

// finish writes the newest sequence of every tree touched.
func (a *applier) finish() error {
	if err := a.finishHeads(); err != nil { // projections/custody.go
		return err
	}
	for id, seq := range a.trees {
		if err := a.exec(bumpTree, seq, id); err != nil {
			return err
		}
	}
	return nil
}

// shred records that the data keys of ids must be destroyed.
func (a *applier) shred(seq uint64, ids ...string) error {
	for _, id := range ids {
		if err := a.exec(insertShred, id, seq); err != nil {
			return err
		}
		a.shredded = append(a.shredded, id)
	}
	return nil
}

// serverExists reports whether the server has a row (cached per transaction).
func (a *applier) serverExists(id string) (bool, error) {
	if ok, known := a.servers[id]; known {
		return ok, nil
	}
	var n int
	if err := a.queryRow(existsServer, id).Scan(&n); err != nil {
		return false, err
	}
	a.servers[id] = n > 0
	return n > 0, nil
}

// apply folds r into the stored state of its aggregate and writes the
// result back, recording data keys to destroy. row is a create's row when
// Decode mapped it already.
func (a *applier) apply(r events.Record, row []any) error {
	switch e := r.Event.(type) {
	case events.ServerCreated:
		if row == nil {
			row = serverArgs(domain.ApplyServer(domain.Server{}, r), r.Sequence)
		}
		a.servers[r.ServerID] = true
		delete(a.trees, r.ServerID)
		return a.exec(insertServer, row...)
	case events.ServerUpdated, events.ServerToolsChanged:
		s, _, err := scanServer(a.queryRow(selectServer, r.ServerID))
		if err != nil {
			return ignoreMissing(err)
		}
		s = domain.ApplyServer(s, r)
		a.trees[r.ServerID] = r.Sequence
		return a.exec(insertServer, serverArgs(s, r.Sequence)...)
	case events.ServerDeleted:
		// The cascade destroys the key of every credential under the server
		// in the read model: the event's list may miss credentials created
		// concurrently with the delete.
		ids, err := a.treeCredentials(r.ServerID)
		if err != nil {
			return err
		}
		seen := make(map[string]bool, len(ids))
		for _, id := range ids {
			seen[id] = true
		}
		for _, id := range e.CredentialIDs {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		if err := a.shred(r.Sequence, ids...); err != nil {
			return err
		}
		delete(a.trees, r.ServerID)
		a.servers[r.ServerID] = false
		if err := a.exec(deleteCreds, r.ServerID); err != nil {
			return err
		}
		return a.exec(deleteServer, r.ServerID)
	case events.CredentialCreated:
		ok, err := a.serverExists(r.ServerID)
		if err != nil {
			return err
		}
		if !ok {
			// Stored after its server was deleted (or for no server): never
			// a live credential without a server; its key goes.
			return a.shred(r.Sequence, r.AggregateID)
		}
		if row == nil {
			row = credentialArgs(domain.ApplyCredential(domain.Credential{}, r))
		}
		a.trees[r.ServerID] = r.Sequence
		return a.exec(insertCred, row...)
	case events.CredentialDeleted:
		a.trees[r.ServerID] = r.Sequence
		if err := a.shred(r.Sequence, r.AggregateID); err != nil {
			return err
		}
		return a.exec(deleteCred, r.AggregateID)
	case events.CredentialRevoked, events.CredentialUsed:
		a.trees[r.ServerID] = r.Sequence
		if _, revoked := e.(events.CredentialRevoked); revoked {
			if err := a.shred(r.Sequence, r.AggregateID); err != nil {
				return err
			}
		}
		c, err := scanCredential(a.queryRow(selectCred, r.AggregateID))
		if err != nil {
			return ignoreMissing(err)
		}
		c = domain.ApplyCredential(c, r)
		return a.exec(insertCred, credentialArgs(c)...)
	case events.CredentialExpiringSoon, events.CredentialExpired, events.OwnerErased, events.AuditRejected:
		return a.applyCustody(r) // projections/custody.go
	}
	return nil
}

func (a *applier) treeCredentials(serverID string) ([]string, error) {
	rows, err := a.query(selectTreeCreds, serverID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ignoreMissing treats an event about an aggregate the read model no longer
// holds (deleted meanwhile) as applied.
func ignoreMissing(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
