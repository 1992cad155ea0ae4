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

const credentialColumns = `id, server_id, account, user, name, auth_type, authorization_preview,
	header_names, expires_at, last_used_at, created_at, updated_at, revoked_at, secret`

func scanCredential(row scanner) (domain.Credential, error) {
	var (
		c                             domain.Credential
		name, preview                 sql.NullString
		expires, lastUsed, revoked    sql.NullString
		headerNames, created, updated string
		secret                        []byte
	)
	err := row.Scan(&c.ID, &c.ServerID, &c.Owner.Account, &c.Owner.User, &name, &c.AuthType, &preview,
		&headerNames, &expires, &lastUsed, &created, &updated, &revoked, &secret)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Credential{}, ErrNotFound
	}
	if err != nil {
		return domain.Credential{}, err
	}
	if name.Valid {
		c.Name = &name.String
	}
	if preview.Valid {
		c.AuthorizationPreview = &preview.String
	}
	if headerNames == "[]" { // all but headers credentials: skip the decoder
		c.HeaderNames = []string{}
	} else if err := json.Unmarshal([]byte(headerNames), &c.HeaderNames); err != nil {
		return domain.Credential{}, err
	}
	c.ExpiresAt, c.LastUsedAt, c.RevokedAt = parseTimePtr(expires), parseTimePtr(lastUsed), parseTimePtr(revoked)
	c.CreatedAt, c.UpdatedAt = parseTime(created), parseTime(updated)
	if len(secret) > 0 {
		c.Secret = new(events.Sealed)
		if err := json.Unmarshal(secret, c.Secret); err != nil {
			return domain.Credential{}, err
		}
	}
	return c, nil
}

func credentialArgs(c domain.Credential) []any {
	names, _ := json.Marshal(c.HeaderNames)
	var secret any
	if c.Secret != nil {
		secret, _ = json.Marshal(c.Secret)
	}
	return []any{c.ID, c.ServerID, c.Owner.Key(), c.Owner.Account, c.Owner.User, c.Name, c.AuthType,
		c.AuthorizationPreview, string(names), timeArg(c.ExpiresAt), timeArg(c.LastUsedAt),
		c.CreatedAt.String(), c.UpdatedAt.String(), timeArg(c.RevokedAt), secret}
}

// GetCredential returns the owner's credential of a server.
func (v View) GetCredential(ctx context.Context, owner events.Owner, serverID, id string) (domain.Credential, error) {
	return scanCredential(v.q.QueryRowContext(ctx, "SELECT "+credentialColumns+
		" FROM credentials WHERE id = ? AND server_id = ? AND owner = ?", id, serverID, owner.Key()))
}

// credentialListColumns are credentialColumns without the sealed secret (a
// list never shows it; reading and decoding it was a large part of a page).
const credentialListColumns = `id, server_id, account, user, name, auth_type, authorization_preview,
	header_names, expires_at, last_used_at, created_at, updated_at, revoked_at, NULL`

// ListCredentials returns one page of the owner's credentials of a server,
// without their sealed secrets (Secret is nil; GetCredential has it).
func (v View) ListCredentials(ctx context.Context, owner events.Owner, serverID string, includeRevoked bool, p Page) ([]domain.Credential, bool, error) {
	q := "SELECT " + credentialListColumns + " FROM credentials WHERE server_id = ? AND owner = ?"
	if !includeRevoked {
		q += " AND revoked_at IS NULL"
	}
	return page(ctx, v.q, q, []any{serverID, owner.Key()}, p, scanCredential)
}

// ListServerCredentials is ListCredentials for a server that must exist:
// ErrNotFound when the owner has no such server. It needs no transaction: a
// page with items proves the server (its credentials are deleted with it,
// in one transaction), and only an empty page is followed by a look at the
// server (a server without those credentials existed between the two).
func (v View) ListServerCredentials(ctx context.Context, owner events.Owner, serverID string, includeRevoked bool, p Page) ([]domain.Credential, bool, error) {
	out, more, err := v.ListCredentials(ctx, owner, serverID, includeRevoked, p)
	if err != nil || len(out) > 0 {
		return out, more, err
	}
	var one int
	err = v.q.QueryRowContext(ctx, "SELECT 1 FROM servers WHERE id = ? AND owner = ?", serverID, owner.Key()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, ErrNotFound
	}
	return out, more, err
}

// NewestUsableCredential returns the owner's newest credential of a server
// that is neither revoked nor expired at now, or ErrNotFound.
func (v View) NewestUsableCredential(ctx context.Context, owner events.Owner, serverID string, now time.Time) (domain.Credential, error) {
	return scanCredential(v.q.QueryRowContext(ctx, "SELECT "+credentialColumns+
		` FROM credentials WHERE server_id = ? AND owner = ? AND revoked_at IS NULL
		  AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC LIMIT 1`,
		serverID, owner.Key(), events.NewTime(now).String()))
}
