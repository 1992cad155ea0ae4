package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/mcpvault/vault/apijson"
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

func credentialArgs(c domain.Credential) []any {
	names, _ := json.Marshal(c.HeaderNames)
	var secret any
	if c.Secret != nil {
		secret, _ = json.Marshal(c.Secret)
	}
	return []any{c.ID, c.ServerID, c.Owner.Key(), c.Owner.Account, c.Owner.User, c.Name, c.AuthType,
		c.AuthorizationPreview, string(names), timeArg(c.ExpiresAt), timeArg(c.LastUsedAt),
		c.CreatedAt.String(), c.UpdatedAt.String(), timeArg(c.RevokedAt), secret, credentialDoc(&c)}
}

// credentialDoc is the credential's public object as the API sends it
// (apijson), stored with the row so that a read copies it instead of
// decoding ten columns and rendering them: on a page of 20 that work was
// most of the read's cost. A change to the object's shape needs a migration
// that renders every row again (renderCredentialDocs).
func credentialDoc(c *domain.Credential) []byte {
	return apijson.AppendCredential(make([]byte, 0, 512), c)
}

// renderCredentialDocs renders the stored object of every credential: the
// migration that added the column runs it.
func renderCredentialDocs(ctx context.Context, tx *sql.Tx) error {
	_, _, err := renderDocs(ctx, tx, false)
	return err
}

// renderDocs renders the stored object of every credential (of those
// without one, when missing), by id in chunks. A row whose columns cannot
// be read is skipped (counted): it keeps no object, and its reads fail as
// they did before objects were stored, instead of the whole file.
func renderDocs(ctx context.Context, tx *sql.Tx, missing bool) (rendered, skipped int, err error) {
	list := "SELECT id FROM credentials WHERE id > ? ORDER BY id LIMIT 1000"
	if missing {
		list = "SELECT id FROM credentials WHERE doc IS NULL AND id > ? ORDER BY id LIMIT 1000"
	}
	after := ""
	for {
		rows, err := tx.QueryContext(ctx, list, after)
		if err != nil {
			return rendered, skipped, err
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return rendered, skipped, err
			}
			ids = append(ids, id)
		}
		if err := rows.Close(); err != nil {
			return rendered, skipped, err
		}
		if len(ids) == 0 {
			return rendered, skipped, nil
		}
		for _, id := range ids {
			c, err := scanCredential(tx.QueryRowContext(ctx, "SELECT "+credentialColumns+" FROM credentials WHERE id = ?", id))
			if err != nil {
				skipped++
				continue
			}
			if _, err := tx.ExecContext(ctx, "UPDATE credentials SET doc = ? WHERE id = ?", credentialDoc(&c), id); err != nil {
				return rendered, skipped, err
			}
			rendered++
		}
		after = ids[len(ids)-1]
	}
}

// renderMissingDocs renders the objects a build older than the column left
// out (a projector still running it wrote rows after an API of this build
// migrated the file, or the file went back and forth between the two). A
// writer runs it when it opens; reads render such rows from their columns
// meanwhile.
func (d *DB) renderMissingDocs(ctx context.Context) (int, error) {
	var any bool
	if err := d.db().QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM credentials WHERE doc IS NULL)").Scan(&any); err != nil || !any {
		return 0, err
	}
	tx, err := d.beginWrite(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	n, _, err := renderDocs(ctx, tx, true)
	if err != nil {
		return 0, err
	}
	return n, tx.Commit()
}

// GetCredential returns the owner's credential of a server.
func (v View) GetCredential(ctx context.Context, owner events.Owner, serverID, id string) (domain.Credential, error) {
	return scanCredential(v.q.QueryRowContext(ctx, "SELECT "+credentialColumns+
		" FROM credentials WHERE id = +? AND server_id = +? AND owner = +?", id, serverID, owner.Key()))
}

// CredentialDoc returns the owner's credential of a server as the API
// sends it.
func (v View) CredentialDoc(ctx context.Context, owner events.Owner, serverID, id string) ([]byte, error) {
	var doc []byte
	err := v.q.QueryRowContext(ctx, "SELECT doc FROM credentials WHERE id = +? AND server_id = +? AND owner = +?",
		id, serverID, owner.Key()).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err == nil && len(doc) == 0 { // written by an older build (renderMissingDocs)
		c, err := v.GetCredential(ctx, owner, serverID, id)
		if err != nil {
			return nil, err
		}
		return credentialDoc(&c), nil
	}
	return doc, err
}

// CredentialDocs appends one page of the owner's credentials of a server, as
// the API sends them, to dst; ErrNotFound when the owner has no such server.
// It needs no transaction: a page with items proves the server (its
// credentials are deleted with it, in one transaction), and only an empty
// page is followed by a look at the server (a server without those
// credentials existed between the two).
func (v View) CredentialDocs(ctx context.Context, owner events.Owner, serverID string, includeRevoked bool, p Page, dst []byte) (DocPage, error) {
	where := " FROM credentials WHERE server_id = +? AND owner = +?"
	if !includeRevoked {
		where += " AND revoked_at IS NULL"
	}
	out, err := docPage(ctx, v.q, "SELECT id, doc"+where, []any{serverID, owner.Key()}, p, dst)
	if errors.Is(err, errNoStoredObject) {
		// A row written by an older build (renderMissingDocs): this page
		// is rendered from the columns.
		items, more, perr := page(ctx, v.q, "SELECT "+credentialColumns+where, []any{serverID, owner.Key()}, p, scanCredential)
		if perr != nil {
			return DocPage{}, perr
		}
		out, err = DocPage{Data: dst, N: len(items), More: more}, nil
		for i := range items {
			if i > 0 {
				out.Data = append(out.Data, ',')
			}
			out.Data = apijson.AppendCredential(out.Data, &items[i])
		}
		if len(items) > 0 {
			out.FirstID, out.LastID = items[0].ID, items[len(items)-1].ID
		}
	}
	if err != nil || out.N > 0 {
		return out, err
	}
	if err := v.serverExists(ctx, owner, serverID); err != nil {
		return DocPage{}, err
	}
	return out, nil
}

func (v View) serverExists(ctx context.Context, owner events.Owner, serverID string) error {
	var one int
	err := v.q.QueryRowContext(ctx, "SELECT 1 FROM servers WHERE id = +? AND owner = +?", serverID, owner.Key()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// NewestUsableCredential returns the owner's newest credential of a server
// that is neither revoked nor expired at now, or ErrNotFound.
func (v View) NewestUsableCredential(ctx context.Context, owner events.Owner, serverID string, now time.Time) (domain.Credential, error) {
	return scanCredential(v.q.QueryRowContext(ctx, "SELECT "+credentialColumns+
		` FROM credentials WHERE server_id = +? AND owner = +? AND revoked_at IS NULL
		  AND (expires_at IS NULL OR expires_at > +?) ORDER BY id DESC LIMIT 1`,
		serverID, owner.Key(), events.NewTime(now).String()))
}
