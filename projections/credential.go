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
		c      domain.Credential
		f      credentialFields
		secret []byte
	)
	err := row.Scan(&c.ID, &c.ServerID, &c.Owner.Account, &c.Owner.User, &f.name, &c.AuthType, &f.preview,
		&f.headerNames, &f.expires, &f.lastUsed, &f.created, &f.updated, &f.revoked, &secret)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Credential{}, ErrNotFound
	}
	if err != nil {
		return domain.Credential{}, err
	}
	if err := f.into(&c); err != nil {
		return domain.Credential{}, err
	}
	if len(secret) > 0 {
		c.Secret = new(events.Sealed)
		if err := json.Unmarshal(secret, c.Secret); err != nil {
			return domain.Credential{}, err
		}
	}
	return c, nil
}

// credentialFields are the scanned columns that need converting.
type credentialFields struct {
	name, preview                 sql.NullString
	expires, lastUsed, revoked    sql.NullString
	headerNames, created, updated string
}

func (f *credentialFields) into(c *domain.Credential) error {
	if f.name.Valid {
		c.Name = &f.name.String
	}
	if f.preview.Valid {
		c.AuthorizationPreview = &f.preview.String
	}
	if f.headerNames == "[]" { // all but headers credentials: skip the decoder
		c.HeaderNames = []string{}
	} else if err := json.Unmarshal([]byte(f.headerNames), &c.HeaderNames); err != nil {
		return err
	}
	c.ExpiresAt, c.LastUsedAt, c.RevokedAt = parseTimePtr(f.expires), parseTimePtr(f.lastUsed), parseTimePtr(f.revoked)
	c.CreatedAt, c.UpdatedAt = parseTime(f.created), parseTime(f.updated)
	return nil
}

// credentialListColumns are what a list page reads: not the sealed secret
// (a list never shows it; reading and decoding it was a large part of a
// page), nor the server and owner, which the query fixes.
const credentialListColumns = `id, name, auth_type, authorization_preview, header_names, expires_at,
	last_used_at, created_at, updated_at, revoked_at`

// scanCredentialListRow scans credentialListColumns of a credential of
// owner's server serverID.
func scanCredentialListRow(row scanner, owner events.Owner, serverID string) (domain.Credential, error) {
	c := domain.Credential{ServerID: serverID, Owner: owner}
	var f credentialFields
	if err := row.Scan(&c.ID, &f.name, &c.AuthType, &f.preview, &f.headerNames, &f.expires, &f.lastUsed,
		&f.created, &f.updated, &f.revoked); err != nil {
		return domain.Credential{}, err
	}
	return c, f.into(&c)
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

// ListCredentials returns one page of the owner's credentials of a server,
// without their sealed secrets (Secret is nil; GetCredential has it).
func (v View) ListCredentials(ctx context.Context, owner events.Owner, serverID string, includeRevoked bool, p Page) ([]domain.Credential, bool, error) {
	q := "SELECT " + credentialListColumns + " FROM credentials WHERE server_id = ? AND owner = ?"
	if !includeRevoked {
		q += " AND revoked_at IS NULL"
	}
	return page(ctx, v.q, q, []any{serverID, owner.Key()}, p, func(r scanner) (domain.Credential, error) {
		return scanCredentialListRow(r, owner, serverID)
	})
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
