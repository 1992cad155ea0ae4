package e2e

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mcpvault/vault/internal/vaulttest"
)

var seedUpdate = flag.Bool("update", false, "rewrite e2e/testdata/*.golden")

// The seed's own values stand in for the ids and timestamps of a run, so
// that a golden file reads like ../shared/seed/create-mcp-credential.txt.
const (
	seedServerID     = "mcp_srv_aa87e2b1112a455b8deabed784372198"
	seedCredentialID = "mcp_cred_bb98f3c2223b566c9dfbcef895483209"
	seedTimestamp    = "2026-04-29T12:00:00.000Z"
)

// seedCredentialFields are the seed response's fields, in the seed's order.
var seedCredentialFields = []string{"id", "object", "server_id", "name", "auth_type", "authorization_preview",
	"header_names", "expires_at", "last_used_at", "created_at", "updated_at", "revoked_at"}

var seedQuotedTime = regexp.MustCompile(`"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"`)

// seedNormalise indents raw (keeping its key order) and replaces the run's
// ids and timestamps with the seed's.
func seedNormalise(tb testing.TB, raw []byte, ids map[string]string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		tb.Fatalf("not JSON: %v: %s", err, raw)
	}
	out := buf.String()
	for id, stand := range ids {
		out = strings.ReplaceAll(out, id, stand)
	}
	out = seedQuotedTime.ReplaceAllString(out, `"`+seedTimestamp+`"`)
	return []byte(out + "\n")
}

// seedGolden compares got with testdata/name (rewriting it with -update).
func seedGolden(tb testing.TB, name string, got []byte) {
	tb.Helper()
	path := filepath.Join("testdata", name)
	if *seedUpdate {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		tb.Errorf("%s differs from the golden file (run with -update if the change is intended):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestSeedExample replays ../shared/seed/create-mcp-credential.txt: the
// response has exactly the seed's fields, in its order, with its shapes.
func TestSeedExample(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	a := apiCallerA

	srv, sraw := apiMustOK(t, env, a, "POST", "/servers",
		map[string]any{"name": "Linear", "server_label": "linear", "server_url": "https://mcp.linear.app/mcp"}, http.StatusCreated)
	sid := srv["id"].(string)
	seedGolden(t, "seed_server.golden", seedNormalise(t, sraw, map[string]string{sid: seedServerID}))

	r := a.do(t, env, "POST", "/servers/"+sid+"/credentials", `{"name":"Personal Linear token","bearer_token":"lin_api_xxx"}`)
	apiMustStatus(t, r, http.StatusCreated)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	if keys := apiMustKeys(t, r.Body); !slices.Equal(keys, seedCredentialFields) {
		t.Errorf("fields %v,\nwant the seed's %v", keys, seedCredentialFields)
	}
	c := apiMustDecode(t, r.Body)
	cid, _ := c["id"].(string)
	if !apiReCredID.MatchString(cid) {
		t.Errorf("id %q is not mcp_cred_ + 32 lowercase hex", cid)
	}
	// The seed's shapes, field by field.
	shapes := map[string]any{
		"object": "mcp.credential", "server_id": sid, "name": "Personal Linear token", "auth_type": "bearer",
		"authorization_preview": "****", // "lin_api_xxx" has 11 characters: shorter than 12
		"expires_at":            nil, "last_used_at": nil, "revoked_at": nil,
	}
	for k, want := range shapes {
		if c[k] != want {
			t.Errorf("%s = %#v, want %#v", k, c[k], want)
		}
	}
	if hn, ok := c["header_names"].([]any); !ok || len(hn) != 0 {
		t.Errorf("header_names %#v, want []", c["header_names"])
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if s, _ := c[k].(string); !apiReTime.MatchString(s) {
			t.Errorf("%s %#v is not an RFC 3339 UTC timestamp with milliseconds and Z", k, c[k])
		}
	}
	if c["created_at"] != c["updated_at"] {
		t.Errorf("a new credential has created_at %v != updated_at %v", c["created_at"], c["updated_at"])
	}
	if bytes.Contains(r.Body, []byte("lin_api_xxx")) {
		t.Errorf("the response holds the secret: %s", r.Body)
	}
	ids := map[string]string{sid: seedServerID, cid: seedCredentialID}
	seedGolden(t, "seed_credential.golden", seedNormalise(t, r.Body, ids))

	// GET and list answer the same object, byte for byte.
	g := a.do(t, env, "GET", "/servers/"+sid+"/credentials/"+cid, nil)
	apiMustStatus(t, g, http.StatusOK)
	if !bytes.Equal(g.Body, r.Body) {
		t.Errorf("GET differs from the create answer:\n%s\n%s", g.Body, r.Body)
	}
	l := a.do(t, env, "GET", "/servers/"+sid+"/credentials", nil)
	apiMustStatus(t, l, http.StatusOK)
	var list struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(l.Body, &list); err != nil || len(list.Data) != 1 {
		t.Fatalf("list: %v %s", err, l.Body)
	}
	if !bytes.Equal(list.Data[0], r.Body) {
		t.Errorf("listed credential differs from the create answer:\n%s\n%s", list.Data[0], r.Body)
	}
	// A server's GET answers what its create did.
	if gs := a.do(t, env, "GET", "/servers/"+sid, nil); !bytes.Equal(gs.Body, sraw) {
		t.Errorf("server GET differs from the create answer:\n%s\n%s", gs.Body, sraw)
	}
}

// TestSeedPreview: "****...abcd" (the last 4 characters) for secrets of 12
// or more characters, "****" when shorter, null for headers and none.
func TestSeedPreview(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	a := apiCallerA
	sid := apiMustCreateServer(t, env, a, nil)["id"].(string)
	cases := []struct {
		name    string
		body    map[string]any
		preview any
		headers []any
	}{
		{"bearer 26 chars", map[string]any{"bearer_token": "lin_api_0123456789abcd1234"}, "****...1234", []any{}},
		{"bearer 12 chars", map[string]any{"bearer_token": "abcdefgh1234"}, "****...1234", []any{}},
		{"bearer 11 chars", map[string]any{"bearer_token": "abcdefg1234"}, "****", []any{}},
		{"bearer 1 char", map[string]any{"bearer_token": "x"}, "****", []any{}},
		{"bearer 12 multibyte chars", map[string]any{"bearer_token": "éééééééé12é4"}, "****...12é4", []any{}},
		{"bearer 11 multibyte chars (more than 12 bytes)", map[string]any{"bearer_token": "ééééééé1234"}, "****", []any{}},
		{"authorization 18 chars", map[string]any{"authorization": "Bearer lin_api_xxx"}, "****..._xxx", []any{}},
		{"authorization 11 chars", map[string]any{"authorization": "Basic abcde"}, "****", []any{}},
		{"headers", map[string]any{"headers": map[string]string{"X-Tenant": "t-1", "X-Api-Key": "key-0123456789abcd"}}, nil, []any{"X-Api-Key", "X-Tenant"}},
		{"none", map[string]any{"auth_type": "none"}, nil, []any{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, raw := apiMustOK(t, env, a, "POST", "/servers/"+sid+"/credentials", c.body, http.StatusCreated)
			if got["authorization_preview"] != c.preview {
				t.Errorf("authorization_preview %#v, want %#v", got["authorization_preview"], c.preview)
			}
			if !apiJSONEqual(got["header_names"], c.headers) {
				t.Errorf("header_names %#v, want %#v", got["header_names"], c.headers)
			}
			if keys := apiMustKeys(t, raw); !slices.Equal(keys, seedCredentialFields) {
				t.Errorf("fields %v, want the seed's", keys)
			}
			g := apiMustGet(t, env, a, "/servers/"+sid+"/credentials/"+got["id"].(string))
			if g["authorization_preview"] != c.preview || !apiJSONEqual(g["header_names"], c.headers) {
				t.Errorf("read back: %v", g)
			}
		})
	}
}
