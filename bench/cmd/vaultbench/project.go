package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	_ "github.com/mattn/go-sqlite3" // the raw baseline's driver

	"github.com/mcpvault/vault/apijson"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/service"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// projectorCatchup runs the real projector (service.Projector, the code of
// bin/projector) against the stream at natsURL into an empty read model at
// path, and returns the time until it has applied sequence total.
func projectorCatchup(ctx context.Context, natsURL, path string, total uint64) (time.Duration, error) {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Verifying every event's signature and chain link, as a deployed
	// projector does (the stream is signed with benchAudit).
	p := &service.Projector{NATSURL: natsURL, Stream: "VAULT", ReadModelPath: path, Log: quiet, AuditKeys: benchAudit}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	defer func() { cancel(); <-done }()
	var rd *projections.DB
	for rd == nil {
		db, err := projections.Open(ctx, path, projections.Reader)
		if err == nil {
			rd = db
			break
		}
		select {
		case err := <-done:
			return 0, fmt.Errorf("projector stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	defer rd.Close()
	for {
		seq, err := rd.AppliedSeq(ctx)
		if err == nil && seq >= total {
			return time.Since(start), nil
		}
		select {
		case err := <-done:
			return 0, fmt.Errorf("projector stopped at %d of %d: %v", seq, total, err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// rebuild runs service.Rebuild (Bulk mode into a new file, then the atomic
// swap into path) and returns the whole time until the new file serves and
// the replay part of it, as the rebuild logs them (the removal of the old
// generation's files, 2 s after the swap, is not counted).
func rebuild(ctx context.Context, natsURL, path string) (total, replay time.Duration, err error) {
	var logs syncBuf
	r := &service.Rebuild{NATSURL: natsURL, Stream: "VAULT", ReadModelPath: path, AuditKeys: benchAudit,
		Log: slog.New(slog.NewJSONHandler(&logs, nil)), Progress: io.Discard}
	if err := r.Run(ctx); err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		var l struct {
			Msg     string  `json:"msg"`
			Seconds float64 `json:"seconds"`
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch l.Msg {
		case "replayed":
			replay = time.Duration(l.Seconds * float64(time.Second))
		case "read model rebuilt and swapped in":
			total = time.Duration(l.Seconds * float64(time.Second))
		}
	}
	if total == 0 || replay == 0 {
		return 0, 0, fmt.Errorf("the rebuild did not log its times:\n%s", logs.String())
	}
	return total, replay, nil
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The read model's insert statements, column for column as
// projections/apply.go writes them.
const (
	rawInsertServer = `INSERT OR REPLACE INTO servers (id, owner, account, user, name, server_label, server_url,
	server_description, allowed_tools, require_approval, metadata, created_at, updated_at, tree_seq)
	VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`
	rawInsertCred = `INSERT OR REPLACE INTO credentials (id, server_id, owner, account, user, name, auth_type,
	authorization_preview, header_names, expires_at, last_used_at, created_at, updated_at, revoked_at, secret, doc)
	VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`
)

// dbRow is one INSERT of the raw baseline with its arguments.
type dbRow struct {
	server bool
	args   []any
}

// rowsOf decodes msgs and maps them to the read model's rows with the domain
// fold, outside any timing: the raw baseline only inserts.
func rowsOf(msgs []streamMsg) ([]dbRow, error) {
	out := make([]dbRow, 0, len(msgs))
	for i, m := range msgs {
		r, err := events.Unmarshal(m.Data)
		if err != nil {
			return nil, err
		}
		r.Sequence = uint64(i + 1)
		switch r.Event.(type) {
		case events.ServerCreated:
			s := domain.ApplyServer(domain.Server{}, r)
			meta, _ := json.Marshal(s.Metadata)
			out = append(out, dbRow{server: true, args: []any{s.ID, s.Owner.Key(), s.Owner.Account, s.Owner.User, s.Name,
				s.ServerLabel, s.ServerURL, s.ServerDescription, nil, s.RequireApproval, string(meta),
				s.CreatedAt.String(), s.UpdatedAt.String(), r.Sequence}})
		case events.CredentialCreated:
			c := domain.ApplyCredential(domain.Credential{}, r)
			names, _ := json.Marshal(c.HeaderNames)
			secret, _ := json.Marshal(c.Secret)
			out = append(out, dbRow{args: []any{c.ID, c.ServerID, c.Owner.Key(), c.Owner.Account, c.Owner.User, c.Name,
				c.AuthType, c.AuthorizationPreview, string(names), nil, nil, c.CreatedAt.String(), c.UpdatedAt.String(), nil, secret,
				apijson.AppendCredential(nil, &c)}}) // the stored API object (projections/credential.go)
		default:
			return nil, fmt.Errorf("unexpected event %T", r.Event)
		}
	}
	return out, nil
}

// rawInsert inserts rows into db in transactions of batch rows with
// prepared statements, and returns the time it took.
func rawInsert(ctx context.Context, db *sql.DB, rows []dbRow, batch int) (time.Duration, error) {
	// Without the context's cancellation, as the projector's applier runs:
	// go-sqlite3 runs each statement under a cancellable context in a
	// goroutine of its own and waits for it, which a plain insert loop
	// would not pay (before 2026-11-30 21:57 the baseline paid it).
	ctx = context.WithoutCancel(ctx)
	start := time.Now()
	for lo := 0; lo < len(rows); lo += batch {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		ss, err := tx.PrepareContext(ctx, rawInsertServer)
		if err != nil {
			tx.Rollback()
			return 0, err
		}
		cs, err := tx.PrepareContext(ctx, rawInsertCred)
		if err != nil {
			tx.Rollback()
			return 0, err
		}
		for _, r := range rows[lo:min(lo+batch, len(rows))] {
			st := cs
			if r.server {
				st = ss
			}
			if _, err := st.ExecContext(ctx, r.args...); err != nil {
				tx.Rollback()
				return 0, err
			}
		}
		ss.Close()
		cs.Close()
		if err := tx.Commit(); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// rawFile inserts rows into a new read-model file created by
// projections.Open in Writer mode: the projector's schema and pragmas
// (WAL, synchronous=NORMAL, secure_delete=on), one connection.
func rawFile(ctx context.Context, path string, rows []dbRow, batch int) (time.Duration, error) {
	db, err := projections.Open(ctx, path, projections.Writer)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return rawInsert(ctx, db.SQL(), rows, batch)
}

// rawMemory inserts rows into an in-memory database with the read model's
// schema (copied from a file made by projections.Open): SQLite's CPU ceiling.
func rawMemory(ctx context.Context, schemaFrom string, rows []dbRow, batch int) (time.Duration, error) {
	src, err := projections.Open(ctx, schemaFrom, projections.Writer)
	if err != nil {
		return 0, err
	}
	var ddl []string
	q, err := src.SQL().QueryContext(ctx, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")
	if err != nil {
		src.Close()
		return 0, err
	}
	for q.Next() {
		var s string
		q.Scan(&s)
		ddl = append(ddl, s)
	}
	q.Close()
	src.Close()
	db, err := sql.Open("sqlite3", "file::memory:?_secure_delete=on")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one connection: each has its own in-memory database
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	for _, s := range ddl {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return 0, err
		}
	}
	return rawInsert(ctx, db, rows, batch)
}
