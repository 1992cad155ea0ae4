package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

const serverColumns = `id, account, user, name, server_label, server_url, server_description,
	allowed_tools, require_approval, metadata, created_at, updated_at, tree_seq, tools_changed_at`

type scanner interface{ Scan(dest ...any) error }

func scanServer(row scanner) (domain.Server, uint64, error) {
	var (
		s                      domain.Server
		desc, tools            sql.NullString
		meta, created, updated string
		seq                    uint64
		toolsChanged           sql.NullString
	)
	err := row.Scan(&s.ID, &s.Owner.Account, &s.Owner.User, &s.Name, &s.ServerLabel, &s.ServerURL,
		&desc, &tools, &s.RequireApproval, &meta, &created, &updated, &seq, &toolsChanged)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Server{}, 0, ErrNotFound
	}
	if err != nil {
		return domain.Server{}, 0, err
	}
	if desc.Valid {
		s.ServerDescription = &desc.String
	}
	if tools.Valid {
		if err := json.Unmarshal([]byte(tools.String), &s.AllowedTools); err != nil {
			return domain.Server{}, 0, err
		}
	}
	if err := json.Unmarshal([]byte(meta), &s.Metadata); err != nil {
		return domain.Server{}, 0, err
	}
	s.CreatedAt, s.UpdatedAt = parseTime(created), parseTime(updated)
	s.ToolsChangedAt = parseTimePtr(toolsChanged)
	return s, seq, nil
}

func serverArgs(s domain.Server, seq uint64) []any {
	var tools any
	if s.AllowedTools != nil {
		b, _ := json.Marshal(s.AllowedTools)
		tools = string(b)
	}
	meta, _ := json.Marshal(s.Metadata)
	return []any{s.ID, s.Owner.Key(), s.Owner.Account, s.Owner.User, s.Name, s.ServerLabel, s.ServerURL,
		s.ServerDescription, tools, s.RequireApproval, string(meta), s.CreatedAt.String(), s.UpdatedAt.String(), seq,
		timeArg(s.ToolsChangedAt)}
}

// GetServer returns the owner's server and the last stream sequence under it.
func (v View) GetServer(ctx context.Context, owner events.Owner, id string) (domain.Server, uint64, error) {
	return scanServer(v.q.QueryRowContext(ctx,
		"SELECT "+serverColumns+" FROM servers WHERE id = +? AND owner = +?", id, owner.Key()))
}

// ListServers returns one page of the owner's servers.
func (v View) ListServers(ctx context.Context, owner events.Owner, p Page) ([]domain.Server, bool, error) {
	return page(ctx, v.q, "SELECT "+serverColumns+" FROM servers WHERE owner = +?", []any{owner.Key()}, p,
		func(r scanner) (domain.Server, error) {
			s, _, err := scanServer(r)
			return s, err
		})
}

func parseTime(s string) events.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return events.NewTime(t)
}

func parseTimePtr(s sql.NullString) *events.Time {
	if !s.Valid {
		return nil
	}
	t := parseTime(s.String)
	return &t
}

func timeArg(t *events.Time) any {
	if t == nil {
		return nil
	}
	return t.String()
}
