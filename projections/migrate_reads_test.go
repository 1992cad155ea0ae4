package projections

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/mcpvault/vault/apijson"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// A read model made by a build whose migrations were 0001 and
// 0003_projector only (user_version 2) gets the reads migration when this
// build opens it: the partial index of live credentials exists and the
// instance id is kept.
func TestReadsMigrationAppliesToFilesOfTheProjectorBuild(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rm.sqlite")
	raw, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"migrations/0001_init.sql", "migrations/0003_projector.sql"} {
		body, err := migrations.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := raw.Exec("PRAGMA user_version = " + strconv.Itoa(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	var before string
	if err := raw.QueryRow("SELECT instance_id FROM read_model_instance").Scan(&before); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	d, err := Open(ctx, path, Writer)
	if err != nil {
		t.Fatalf("opening a file of the projector build: %v", err)
	}
	defer d.Close()
	var n int
	if err := d.sql.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'credentials_live_by_server'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("partial index after migration: %d %v", n, err)
	}
	if d.InstanceID() != before || before == "" {
		t.Fatalf("instance id %q, the file had %q", d.InstanceID(), before)
	}
}

// Migrations are recorded by name: a migration that sorts before one
// already applied (two branches adding 0006_a and 0005_b, merged after a
// file got 0006_a) is still applied, once, and a file whose migrations were
// counted in user_version only is taken over without applying any again.
func TestMigrationsRecordedByName(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rm.sqlite")
	d, err := Open(ctx, path, Writer)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	names := func() []string {
		rows, err := d.sql.Query("SELECT name FROM schema_migrations ORDER BY name")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var n string
			rows.Scan(&n)
			out = append(out, n)
		}
		return out
	}
	base, _ := fs.Glob(migrations, "migrations/*.sql")
	if got := names(); len(got) != len(base) {
		t.Fatalf("recorded %v, embedded %v", got, base)
	}
	withExtra := func(extra map[string]string) fstest.MapFS {
		m := fstest.MapFS{}
		for _, n := range base {
			b, _ := migrations.ReadFile(n)
			m[n] = &fstest.MapFile{Data: b}
		}
		for n, sqlText := range extra {
			m["migrations/"+n] = &fstest.MapFile{Data: []byte(sqlText)}
		}
		return m
	}
	if err := d.migrateFrom(ctx, withExtra(map[string]string{"0099_later.sql": "CREATE TABLE later (x);"})); err != nil {
		t.Fatal(err)
	}
	// 0098 sorts before 0099, which this file already has: a count would skip it.
	if err := d.migrateFrom(ctx, withExtra(map[string]string{
		"0099_later.sql":   "CREATE TABLE later (x);",
		"0098_earlier.sql": "CREATE TABLE earlier (x);",
	})); err != nil {
		t.Fatalf("a migration sorting before an applied one: %v", err)
	}
	var n int
	if err := d.sql.QueryRow("SELECT count(*) FROM sqlite_master WHERE name IN ('later', 'earlier')").Scan(&n); err != nil || n != 2 {
		t.Fatalf("tables of both migrations: %d %v", n, err)
	}
	if got := names(); len(got) != len(base)+2 {
		t.Fatalf("recorded %v", got)
	}
	var version int
	d.sql.QueryRow("PRAGMA user_version").Scan(&version)
	if version != len(base)+2 {
		t.Fatalf("user_version %d, want %d", version, len(base)+2)
	}

	// A legacy file: migrations counted in user_version, no record table.
	if _, err := d.sql.Exec("DROP TABLE schema_migrations"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.sql.Exec("PRAGMA user_version = " + strconv.Itoa(len(base))); err != nil {
		t.Fatal(err)
	}
	if err := d.migrate(ctx); err != nil { // would fail if any ran again (CREATE TABLE exists)
		t.Fatalf("taking over a counted file: %v", err)
	}
	if got := names(); len(got) != len(base) {
		t.Fatalf("recorded %v after taking over", got)
	}
}

// A read model made before credentials carried their API object (0006)
// gets every object rendered when this build opens it: a get and every
// list page then answer exactly what the columns say, across the
// migration's chunks of 1,000 rows.
func TestCredentialDocMigrationRendersExistingRows(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rm.sqlite")
	raw := migratedBefore(t, path, "0006")
	owner := events.Owner{Account: "acct", User: "u<&>"}
	srv := "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d01"
	created := events.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC))
	if _, err := raw.Exec(`INSERT INTO servers (id, owner, account, user, name, server_label, server_url,
		require_approval, metadata, created_at, updated_at, tree_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
		srv, owner.Key(), owner.Account, owner.User, "n", "l", "https://example.com/mcp", "never", "{}",
		created.String(), created.String(), 1); err != nil {
		t.Fatal(err)
	}
	const n = 1500
	for i := range n {
		c := domain.Credential{ID: fmt.Sprintf("mcp_cred_0196a1b2c3d4e5f6071829%010d", i), ServerID: srv, Owner: owner,
			AuthType: "bearer", HeaderNames: []string{}, CreatedAt: created, UpdatedAt: created}
		switch i % 4 {
		case 0:
			name, prev := "tok\"en\u2028", "****...wxyz"
			c.Name, c.AuthorizationPreview = &name, &prev
		case 1:
			c.AuthType, c.HeaderNames = "headers", []string{"X-Api-Key", "X-<Team>"}
		case 2:
			exp := events.NewTime(created.Add(time.Hour))
			c.ExpiresAt, c.LastUsedAt = &exp, &exp
		case 3:
			rev := events.NewTime(created.Add(time.Minute))
			c.RevokedAt, c.UpdatedAt = &rev, rev
		}
		args := credentialArgs(c)
		if _, err := raw.Exec(`INSERT INTO credentials (`+strings.TrimSuffix(credentialColumnsInsert, ", doc")+
			`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, args[:len(args)-1]...); err != nil {
			t.Fatal(err)
		}
	}
	d := upgraded(t, raw, path)
	v := d.View()
	var want []byte // every credential's object rendered from its columns, newest first
	for i := n - 1; i >= 0; i-- {
		c, err := v.GetCredential(ctx, owner, srv, fmt.Sprintf("mcp_cred_0196a1b2c3d4e5f6071829%010d", i))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := v.CredentialDoc(ctx, owner, srv, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r := apijson.AppendCredential(nil, &c); !bytes.Equal(doc, r) {
			t.Fatalf("%s: stored %s, columns say %s", c.ID, doc, r)
		}
		if len(want) > 0 {
			want = append(want, ',')
		}
		want = append(want, doc...)
	}
	// The pages, walked forward and then back, join to the same objects.
	var got []byte
	p := Page{Limit: 100, Desc: true}
	for pages := 0; ; pages++ {
		pg, err := v.CredentialDocs(ctx, owner, srv, true, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			got = append(got, ',')
		}
		got = append(got, pg.Data...)
		if !pg.More {
			break
		}
		p.After = pg.LastID
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("pages walked forward differ from the objects (%d vs %d bytes)", len(got), len(want))
	}
	got = got[:0]
	p = Page{Limit: 100, Desc: true, Before: "mcp_cred_0196a1b2c3d4e5f6071829" + strings.Repeat("0", 9) + "0"}
	for {
		pg, err := v.CredentialDocs(ctx, owner, srv, true, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if pg.N > 0 && !bytes.HasPrefix(pg.Data, []byte(`{"id":"`+pg.FirstID+`"`)) {
			t.Fatalf("page before %s starts with %.60s, first_id %s", p.Before, pg.Data, pg.FirstID)
		}
		if len(got) > 0 && pg.N > 0 {
			pg.Data = append(pg.Data, ',')
		}
		got = append(pg.Data, got...)
		if !pg.More {
			break
		}
		p.Before = pg.FirstID
	}
	if want := want[:bytes.LastIndex(want, []byte(`,{"id":"mcp_cred_0196a1b2c3d4e5f60718290000000000"`))]; !bytes.Equal(got, want) {
		t.Fatalf("pages walked back differ from the objects (%d vs %d bytes)", len(got), len(want))
	}
}

// Rows stored without their object after the migration (an older
// projector still writing to a file this build migrated) read the same as
// the others — rendered from their columns — and a writer opening the file
// stores their objects; a row whose columns cannot be read fails its own
// reads only, not the opening of the file.
func TestCredentialsWithoutStoredObjects(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rm.sqlite")
	d, err := Open(ctx, path, Writer)
	if err != nil {
		t.Fatal(err)
	}
	owner := events.Owner{Account: "acct", User: "u1"}
	srv := "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d01"
	at := events.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	var want [][]byte // objects, oldest first
	oldInsert := `INSERT INTO credentials (` + strings.TrimSuffix(credentialColumnsInsert, ", doc") + `) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`
	if _, err := d.sql.Exec(`INSERT INTO servers (id, owner, account, user, name, server_label, server_url,
		require_approval, metadata, created_at, updated_at, tree_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
		srv, owner.Key(), owner.Account, owner.User, "n", "l", "https://example.com/mcp", "never", "{}", at.String(), at.String(), 1); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		name := fmt.Sprintf("cred %d <&>", i)
		c := domain.Credential{ID: fmt.Sprintf("mcp_cred_0196a1b2c3d4e5f6071829%010d", i), ServerID: srv, Owner: owner,
			Name: &name, AuthType: "bearer", HeaderNames: []string{}, CreatedAt: at, UpdatedAt: at}
		args := credentialArgs(c)
		q, a := insertCred, args
		if i%3 == 0 { // as the older build writes it: no object
			q, a = oldInsert, args[:len(args)-1]
		}
		if _, err := d.sql.Exec(q, a...); err != nil {
			t.Fatal(err)
		}
		want = append(want, apijson.AppendCredential(nil, &c))
	}
	bad := "mcp_cred_0196a1b2c3d4e5f60718299999999999"
	if _, err := d.sql.Exec(oldInsert, bad, srv, owner.Key(), owner.Account, owner.User, nil, "headers", nil,
		"not json", nil, nil, at.String(), at.String(), nil, nil); err != nil {
		t.Fatal(err)
	}
	d.Close()

	check := func(d *DB) {
		t.Helper()
		v := d.View()
		for i, w := range want {
			got, err := v.CredentialDoc(ctx, owner, srv, fmt.Sprintf("mcp_cred_0196a1b2c3d4e5f6071829%010d", i))
			if err != nil || !bytes.Equal(got, w) {
				t.Fatalf("credential %d: %s %v, want %s", i, got, err, w)
			}
		}
		pg, err := v.CredentialDocs(ctx, owner, srv, true, Page{Limit: 30, After: "mcp_cred_0196a1b2c3d4e5f6071829"}, nil)
		if err != nil || !bytes.Equal(pg.Data, bytes.Join(want, []byte(","))) || !pg.More {
			t.Fatalf("page: %v more=%v\n%s", err, pg.More, pg.Data)
		}
		if _, err := v.CredentialDoc(ctx, owner, srv, bad); err == nil {
			t.Fatal("the unreadable row read")
		}
	}
	r, err := Open(ctx, path, Reader)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	check(r) // rendered on the fly
	w, err := Open(ctx, path, Writer)
	if err != nil {
		t.Fatalf("a writer opening a file with an unreadable row: %v", err)
	}
	defer w.Close()
	var missing int
	if err := w.sql.QueryRow("SELECT count(*) FROM credentials WHERE doc IS NULL").Scan(&missing); err != nil || missing != 1 {
		t.Fatalf("%d rows without an object after a writer opened the file (want the unreadable one): %v", missing, err)
	}
	check(r) // stored
}

// A read model made before audit_heads was keyed by its subject (0008)
// keeps every chain head: the projector then checks the next link of each
// subject against the head it had.
func TestAuditHeadsMigrationKeepsHeads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rm.sqlite")
	raw := migratedBefore(t, path, "0008")
	want := map[string]string{}
	for i := range 300 {
		subject, head := fmt.Sprintf("vault.mcp_srv_%03d.server", i), fmt.Sprintf("%064x", i*7919)
		want[subject] = head
		if _, err := raw.Exec("INSERT INTO audit_heads (subject, head) VALUES (?, ?)", subject, head); err != nil {
			t.Fatal(err)
		}
	}
	d := upgraded(t, raw, path)
	got := map[string]string{}
	rows, err := d.sql.Query("SELECT subject, head FROM audit_heads")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s, h string
		if err := rows.Scan(&s, &h); err != nil {
			t.Fatal(err)
		}
		got[s] = h
	}
	if !maps.Equal(got, want) {
		t.Fatalf("heads after the migration: %d of %d kept", len(got), len(want))
	}
	var sqlText string
	if err := d.sql.QueryRow("SELECT sql FROM sqlite_schema WHERE name = 'audit_heads'").Scan(&sqlText); err != nil || !strings.Contains(sqlText, "WITHOUT ROWID") {
		t.Fatalf("audit_heads after the migration: %q %v", sqlText, err)
	}
}

// migratedBefore opens a new read model at path with every migration before
// the one named (a file an older build made), on one raw connection.
func migratedBefore(t *testing.T, path, migration string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	before := fstest.MapFS{}
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	for _, n := range names {
		if n < "migrations/"+migration {
			b, _ := migrations.ReadFile(n)
			before[n] = &fstest.MapFile{Data: b}
		}
	}
	if err := (&DB{sql: raw}).migrateFrom(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	return raw
}

// upgraded closes the older build's connection and opens the file as this
// build's writer does (running the migrations since).
func upgraded(t *testing.T, raw *sql.DB, path string) *DB {
	t.Helper()
	raw.Close()
	d, err := Open(context.Background(), path, Writer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
