// Package e2e drives the real vault — API, projector, JetStream and SQLite
// started by internal/vaulttest — over HTTP, as a user of API.md would.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/vaulttest"
)

// ---- shared helpers -------------------------------------------------------

var (
	apiReTime     = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
	apiReServerID = regexp.MustCompile(`^mcp_srv_[0-9a-f]{32}$`)
	apiReCredID   = regexp.MustCompile(`^mcp_cred_[0-9a-f]{32}$`)
)

// apiClock is an injected time source: real time plus an offset a test moves
// forward, so that "updated_at moves" never depends on the machine's speed.
type apiClock struct{ off atomic.Int64 }

func (c *apiClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *apiClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// apiMustStartClocked starts a vault whose API reads time from the returned clock.
func apiMustStartClocked(tb testing.TB) (*vaulttest.Env, *apiClock) {
	tb.Helper()
	c := &apiClock{}
	return vaulttest.MustStart(tb, vaulttest.Options{Now: c.Now}), c
}

// apiWho is a caller: an API key ("" = account A) and an X-On-Behalf-Of user.
type apiWho struct{ Key, User string }

func (w apiWho) String() string {
	acct := "A"
	if w.Key == vaulttest.KeyB {
		acct = "B"
	}
	if w.User == "" {
		return acct + "/-"
	}
	return acct + "/" + w.User
}

// do sends one request as w.
func (w apiWho) do(tb testing.TB, env *vaulttest.Env, method, path string, body any) vaulttest.Response {
	tb.Helper()
	return env.Do(tb, vaulttest.Request{Method: method, Path: path, Body: body, Key: w.Key, User: w.User})
}

var apiCallerA = apiWho{}

// apiMustStatus fails unless r has the status want.
func apiMustStatus(tb testing.TB, r vaulttest.Response, want int) {
	tb.Helper()
	if r.Status != want {
		tb.Fatalf("status %d, want %d; body: %s", r.Status, want, r.Body)
	}
}

// apiMustDecode decodes a JSON object body.
func apiMustDecode(tb testing.TB, raw []byte) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		tb.Fatalf("body is not a JSON object: %v: %s", err, raw)
	}
	return m
}

// apiMustKeys returns the top-level keys of a JSON object in wire order.
func apiMustKeys(tb testing.TB, raw []byte) []string {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		tb.Fatalf("not a JSON object: %s", raw)
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			tb.Fatal(err)
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			tb.Fatal(err)
		}
	}
	return keys
}

// apiMustOK sends a request as w and fails unless it answers want; it returns the decoded body.
func apiMustOK(tb testing.TB, env *vaulttest.Env, w apiWho, method, path string, body any, want int) (map[string]any, []byte) {
	tb.Helper()
	r := w.do(tb, env, method, path, body)
	apiMustStatus(tb, r, want)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		tb.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	return apiMustDecode(tb, r.Body), r.Body
}

// apiMustError checks an error answer: status, the exact body shape
// {"error":{"message","type","param","code"}}, the type and the param
// (nil = JSON null). It returns the inner error object.
func apiMustError(tb testing.TB, r vaulttest.Response, status int, typ string, param any) map[string]any {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status %d, want %d; body: %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		tb.Errorf("error Content-Type %q, want application/json", ct)
	}
	top := apiMustDecode(tb, r.Body)
	if len(top) != 1 || top["error"] == nil {
		tb.Fatalf("error body must be {\"error\":{…}}: %s", r.Body)
	}
	e, ok := top["error"].(map[string]any)
	if !ok {
		tb.Fatalf("error is not an object: %s", r.Body)
	}
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"code", "message", "param", "type"}) {
		tb.Errorf("error keys %v, want exactly code, message, param, type: %s", keys, r.Body)
	}
	if m, _ := e["message"].(string); m == "" {
		tb.Errorf("error message must be a non-empty string: %s", r.Body)
	}
	if e["type"] != typ {
		tb.Errorf("error type %v, want %q: %s", e["type"], typ, r.Body)
	}
	if e["param"] != param {
		tb.Errorf("error param %#v, want %#v: %s", e["param"], param, r.Body)
	}
	if c := e["code"]; c != nil {
		if _, ok := c.(string); !ok {
			tb.Errorf("error code must be a string or null: %s", r.Body)
		}
	}
	return e
}

// apiMustCreateServer creates a server as w and returns its body.
func apiMustCreateServer(tb testing.TB, env *vaulttest.Env, w apiWho, body map[string]any) map[string]any {
	tb.Helper()
	if body == nil {
		body = map[string]any{"name": "Linear", "server_label": "linear", "server_url": "https://mcp.linear.app/mcp"}
	}
	m, _ := apiMustOK(tb, env, w, "POST", "/servers", body, http.StatusCreated)
	return m
}

// apiMustCreateCredential creates a credential as w and returns its body.
func apiMustCreateCredential(tb testing.TB, env *vaulttest.Env, w apiWho, serverID string, body map[string]any) map[string]any {
	tb.Helper()
	m, _ := apiMustOK(tb, env, w, "POST", "/servers/"+serverID+"/credentials", body, http.StatusCreated)
	return m
}

// apiPage is one decoded list answer.
type apiPage struct {
	IDs     []string
	Items   []map[string]any
	FirstID any
	LastID  any
	HasMore bool
}

// apiMustList GETs a list and checks its envelope.
func apiMustList(tb testing.TB, env *vaulttest.Env, w apiWho, path string) apiPage {
	tb.Helper()
	r := w.do(tb, env, "GET", path, nil)
	apiMustStatus(tb, r, http.StatusOK)
	if keys := apiMustKeys(tb, r.Body); !slices.Equal(keys, []string{"object", "data", "first_id", "last_id", "has_more"}) {
		tb.Errorf("list keys %v", keys)
	}
	m := apiMustDecode(tb, r.Body)
	if m["object"] != "list" {
		tb.Errorf("list object %v", m["object"])
	}
	data, ok := m["data"].([]any)
	if !ok {
		tb.Fatalf("data must be an array: %s", r.Body)
	}
	var p apiPage
	for _, d := range data {
		it := d.(map[string]any)
		p.Items = append(p.Items, it)
		p.IDs = append(p.IDs, it["id"].(string))
	}
	p.FirstID, p.LastID = m["first_id"], m["last_id"]
	more, ok := m["has_more"].(bool)
	if !ok {
		tb.Fatalf("has_more must be a bool: %s", r.Body)
	}
	p.HasMore = more
	if len(p.IDs) == 0 {
		if p.FirstID != nil || p.LastID != nil {
			tb.Errorf("empty page must have first_id/last_id null: %s", r.Body)
		}
	} else if p.FirstID != p.IDs[0] || p.LastID != p.IDs[len(p.IDs)-1] {
		tb.Errorf("first_id/last_id %v/%v do not match data %v", p.FirstID, p.LastID, p.IDs)
	}
	return p
}

// apiRandomHex returns 32 random lowercase hex characters.
func apiRandomHex(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// apiMustStore connects to the env's JetStream to look at what was stored.
func apiMustStore(tb testing.TB, env *vaulttest.Env) *eventstore.Store {
	tb.Helper()
	nc, err := eventstore.Connect(env.NATSURL(), "e2e-inspector")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := eventstore.Open(ctx, nc, eventstore.Config{Stream: env.Stream})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// apiStored is what the stream holds: the last event sequence and the number
// of wrapped data keys.
type apiStored struct{ LastSeq, Keys uint64 }

// apiMustStored reads the stream state.
func apiMustStored(tb testing.TB, st *eventstore.Store) apiStored {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seq, err := st.LastSeq(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	ks, err := st.JS.Stream(ctx, st.Config().KeysStreamName())
	if err != nil {
		tb.Fatal(err)
	}
	info, err := ks.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return apiStored{LastSeq: seq, Keys: info.State.Msgs}
}

// ---- servers --------------------------------------------------------------

func TestServerLifecycle(t *testing.T) {
	env, clk := apiMustStartClocked(t)
	a := apiCallerA

	// Create with every field.
	full := map[string]any{
		"name": "Linear", "server_label": "linear.prod_1-a", "server_url": "https://mcp.linear.app/mcp?x=1",
		"server_description": "Issues and projects", "allowed_tools": []string{"issues.list", "issues.create"},
		"require_approval": "never", "metadata": map[string]string{"team": "core", "env": "prod"},
	}
	s1, raw1 := apiMustOK(t, env, a, "POST", "/servers", full, http.StatusCreated)
	wantKeys := []string{"id", "object", "name", "server_label", "server_url", "server_description",
		"allowed_tools", "require_approval", "metadata", "created_at", "updated_at", "tools_changed_at"}
	if keys := apiMustKeys(t, raw1); !slices.Equal(keys, wantKeys) {
		t.Errorf("server keys %v, want %v", keys, wantKeys)
	}
	id1 := s1["id"].(string)
	if !apiReServerID.MatchString(id1) {
		t.Errorf("server id %q", id1)
	}
	for k, want := range map[string]any{"object": "mcp.server", "name": "Linear", "server_label": "linear.prod_1-a",
		"server_url": "https://mcp.linear.app/mcp?x=1", "server_description": "Issues and projects", "require_approval": "never"} {
		if s1[k] != want {
			t.Errorf("%s = %#v, want %#v", k, s1[k], want)
		}
	}
	if got := s1["allowed_tools"]; !apiJSONEqual(got, []any{"issues.list", "issues.create"}) {
		t.Errorf("allowed_tools %v", got)
	}
	if got := s1["metadata"]; !apiJSONEqual(got, map[string]any{"team": "core", "env": "prod"}) {
		t.Errorf("metadata %v", got)
	}
	if !apiReTime.MatchString(s1["created_at"].(string)) || s1["created_at"] != s1["updated_at"] {
		t.Errorf("created_at %v updated_at %v", s1["created_at"], s1["updated_at"])
	}

	// Create with the required fields only: the defaults.
	s2 := apiMustCreateServer(t, env, a, nil)
	id2 := s2["id"].(string)
	if s2["server_description"] != nil || s2["allowed_tools"] != nil || s2["require_approval"] != "always" ||
		!apiJSONEqual(s2["metadata"], map[string]any{}) {
		t.Errorf("defaults: %v", s2)
	}
	if id2 <= id1 {
		t.Errorf("ids must sort by creation: %s then %s", id1, id2)
	}

	// allowed_tools [] (no tool) is not null (every tool), and survives the read model.
	s3 := apiMustCreateServer(t, env, a, map[string]any{"name": "n", "server_label": "l", "server_url": "http://x.example",
		"allowed_tools": []string{}, "server_description": ""})
	if !apiJSONEqual(s3["allowed_tools"], []any{}) || s3["server_description"] != "" {
		t.Errorf("empty allowed_tools/description: %v", s3)
	}

	// GET answers exactly what the create answered (fold vs read model).
	r := a.do(t, env, "GET", "/servers/"+id1, nil)
	apiMustStatus(t, r, http.StatusOK)
	if !bytes.Equal(r.Body, raw1) {
		t.Errorf("GET differs from create:\n%s\n%s", r.Body, raw1)
	}
	r3 := a.do(t, env, "GET", "/servers/"+s3["id"].(string), nil)
	if g := apiMustDecode(t, r3.Body); !apiJSONEqual(g, s3) {
		t.Errorf("GET differs from create:\n%v\n%v", g, s3)
	}

	// List: newest first by default.
	l := apiMustList(t, env, a, "/servers")
	if !slices.Equal(l.IDs, []string{s3["id"].(string), id2, id1}) || l.HasMore {
		t.Errorf("list %v more=%v", l.IDs, l.HasMore)
	}
	if !apiJSONEqual(l.Items[2], s1) {
		t.Errorf("listed server differs from created: %v", l.Items[2])
	}

	// Update: only the given fields change; updated_at moves, created_at does not.
	clk.Advance(time.Second)
	u, uraw := apiMustOK(t, env, a, "POST", "/servers/"+id1, map[string]any{"name": "Linear (renamed)"}, http.StatusOK)
	for k, v := range s1 {
		switch k {
		case "name":
			if u[k] != "Linear (renamed)" {
				t.Errorf("name not updated: %v", u[k])
			}
		case "updated_at":
			if u[k] == v || !apiReTime.MatchString(u[k].(string)) || u[k].(string) <= v.(string) {
				t.Errorf("updated_at %v did not move forward from %v", u[k], v)
			}
		default:
			if !apiJSONEqual(u[k], v) {
				t.Errorf("%s changed by an update that did not give it: %v -> %v", k, v, u[k])
			}
		}
	}
	if g := a.do(t, env, "GET", "/servers/"+id1, nil); !bytes.Equal(g.Body, uraw) {
		t.Errorf("GET after update differs:\n%s\n%s", g.Body, uraw)
	}

	// Update several fields at once, then clear the nullable ones with null.
	clk.Advance(time.Second)
	u2, _ := apiMustOK(t, env, a, "POST", "/servers/"+id1, map[string]any{
		"server_label": "linear2", "server_url": "http://10.0.0.1:8080/mcp", "require_approval": "always",
		"metadata": map[string]string{}, "allowed_tools": []string{"a"},
	}, http.StatusOK)
	if u2["server_label"] != "linear2" || u2["server_url"] != "http://10.0.0.1:8080/mcp" || u2["require_approval"] != "always" ||
		!apiJSONEqual(u2["metadata"], map[string]any{}) || !apiJSONEqual(u2["allowed_tools"], []any{"a"}) ||
		u2["name"] != "Linear (renamed)" || u2["server_description"] != "Issues and projects" {
		t.Errorf("multi-field update: %v", u2)
	}
	clk.Advance(time.Second)
	u3, u3raw := apiMustOK(t, env, a, "POST", "/servers/"+id1, map[string]any{"server_description": nil, "allowed_tools": nil}, http.StatusOK)
	if u3["server_description"] != nil || u3["allowed_tools"] != nil {
		t.Errorf("explicit null did not clear: %v", u3)
	}
	if u3["created_at"] != s1["created_at"] || u3["updated_at"].(string) <= u2["updated_at"].(string) {
		t.Errorf("timestamps after clearing: %v", u3)
	}
	if g := a.do(t, env, "GET", "/servers/"+id1, nil); !bytes.Equal(g.Body, u3raw) {
		t.Errorf("GET after clearing differs:\n%s\n%s", g.Body, u3raw)
	}

	// null for a non-nullable field is a 400 naming it, and changes nothing.
	for _, f := range []string{"name", "server_label", "server_url", "require_approval", "metadata"} {
		r := a.do(t, env, "POST", "/servers/"+id1, map[string]any{f: nil})
		apiMustError(t, r, http.StatusBadRequest, "invalid_request_error", f)
	}
	if g := a.do(t, env, "GET", "/servers/"+id1, nil); !bytes.Equal(g.Body, u3raw) {
		t.Errorf("a refused update changed the server:\n%s\n%s", g.Body, u3raw)
	}

	// Delete: the documented body; then gone from every read and write.
	d, draw := apiMustOK(t, env, a, "DELETE", "/servers/"+id1, nil, http.StatusOK)
	if keys := apiMustKeys(t, draw); !slices.Equal(keys, []string{"id", "object", "deleted"}) ||
		d["id"] != id1 || d["object"] != "mcp.server.deleted" || d["deleted"] != true {
		t.Errorf("delete body: %s", draw)
	}
	random := "mcp_srv_" + apiRandomHex(t)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/servers/%s", nil},
		{"POST", "/servers/%s", map[string]any{"name": "x"}},
		{"DELETE", "/servers/%s", nil},
		{"GET", "/servers/%s/credentials", nil},
		{"POST", "/servers/%s/credentials", map[string]any{"bearer_token": "tok"}},
	} {
		gone := a.do(t, env, c.method, strings.Replace(c.path, "%s", id1, 1), c.body)
		apiMustError(t, gone, http.StatusNotFound, "not_found_error", nil)
		never := a.do(t, env, c.method, strings.Replace(c.path, "%s", random, 1), c.body)
		if !bytes.Equal(gone.Body, never.Body) {
			t.Errorf("%s %s: deleted and never-existing differ:\n%s\n%s", c.method, c.path, gone.Body, never.Body)
		}
	}
	if l := apiMustList(t, env, a, "/servers"); !slices.Equal(l.IDs, []string{s3["id"].(string), id2}) {
		t.Errorf("list after delete: %v", l.IDs)
	}
}

// apiMustGet GETs path and fails unless it is a 200.
func apiMustGet(tb testing.TB, env *vaulttest.Env, w apiWho, path string) map[string]any {
	tb.Helper()
	m, _ := apiMustOK(tb, env, w, "GET", path, nil, http.StatusOK)
	return m
}

// apiJSONEqual compares two values as JSON documents.
func apiJSONEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	na, _ := json.Marshal(va)
	nb, _ := json.Marshal(vb)
	return bytes.Equal(na, nb)
}

// ---- credentials ----------------------------------------------------------

func TestCredentialLifecycle(t *testing.T) {
	env, clk := apiMustStartClocked(t)
	a := apiCallerA
	sid := apiMustCreateServer(t, env, a, nil)["id"].(string)
	credPath := "/servers/" + sid + "/credentials"

	cases := []struct {
		name        string
		body        map[string]any
		authType    string
		preview     any
		headerNames []any
	}{
		{"bearer inferred", map[string]any{"name": "b", "bearer_token": "lin_api_0123456789abcd"}, "bearer", "****...abcd", []any{}},
		{"bearer explicit", map[string]any{"auth_type": "bearer", "bearer_token": "short"}, "bearer", "****", []any{}},
		{"authorization inferred", map[string]any{"authorization": "Basic dXNlcjpwYXNzd29yZA=="}, "authorization", "****...ZA==", []any{}},
		{"authorization explicit", map[string]any{"auth_type": "authorization", "authorization": "Token abc"}, "authorization", "****", []any{}},
		{"headers inferred", map[string]any{"headers": map[string]string{"X-Api-Key": "k1", "Authorization": "Bearer x", "a-b": "v"}},
			"headers", nil, []any{"Authorization", "X-Api-Key", "a-b"}},
		{"none inferred", map[string]any{"name": "public"}, "none", nil, []any{}},
		{"none explicit empty body", map[string]any{"auth_type": "none"}, "none", nil, []any{}},
		{"name null", map[string]any{"name": nil, "bearer_token": "0123456789ab"}, "bearer", "****...89ab", []any{}},
	}
	var ids []string
	for _, c := range cases {
		got, raw := apiMustOK(t, env, a, "POST", credPath, c.body, http.StatusCreated)
		id, _ := got["id"].(string)
		if !apiReCredID.MatchString(id) {
			t.Errorf("%s: id %q", c.name, id)
		}
		ids = append(ids, id)
		if got["object"] != "mcp.credential" || got["server_id"] != sid || got["auth_type"] != c.authType ||
			got["authorization_preview"] != c.preview || !apiJSONEqual(got["header_names"], c.headerNames) {
			t.Errorf("%s: %s", c.name, raw)
		}
		if n, ok := c.body["name"]; (ok && got["name"] != n) || (!ok && got["name"] != nil) {
			t.Errorf("%s: name %v", c.name, got["name"])
		}
		if got["expires_at"] != nil || got["last_used_at"] != nil || got["revoked_at"] != nil ||
			!apiReTime.MatchString(got["created_at"].(string)) || got["created_at"] != got["updated_at"] {
			t.Errorf("%s: timestamps: %s", c.name, raw)
		}
		for _, secret := range []string{"lin_api_0123456789abcd", "dXNlcjpwYXNzd29yZA==", "k1\"", "Bearer x", "Token abc"} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("%s: the response holds the secret %q: %s", c.name, secret, raw)
			}
		}
		// GET answers exactly what the create answered.
		g := a.do(t, env, "GET", credPath+"/"+id, nil)
		apiMustStatus(t, g, http.StatusOK)
		if !bytes.Equal(g.Body, raw) {
			t.Errorf("%s: GET differs from create:\n%s\n%s", c.name, g.Body, raw)
		}
	}

	// List: newest first, every credential.
	l := apiMustList(t, env, a, credPath+"?limit=100")
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(l.IDs, want) || l.HasMore {
		t.Errorf("list %v, want %v", l.IDs, want)
	}

	// Revoke sets revoked_at (and updated_at); the credential stays listed.
	target := ids[0]
	clk.Advance(time.Second)
	rv, rvraw := apiMustOK(t, env, a, "POST", credPath+"/"+target+"/revoke", nil, http.StatusOK)
	ra, _ := rv["revoked_at"].(string)
	if !apiReTime.MatchString(ra) || rv["updated_at"] != ra || ra <= rv["created_at"].(string) {
		t.Errorf("revoke: %s", rvraw)
	}
	if rv["auth_type"] != "bearer" || rv["authorization_preview"] != "****...abcd" || rv["name"] != "b" {
		t.Errorf("revoke changed other fields: %s", rvraw)
	}
	// Revoking twice returns the same object; {} is accepted as a body too.
	clk.Advance(time.Second)
	r2 := a.do(t, env, "POST", credPath+"/"+target+"/revoke", map[string]any{})
	apiMustStatus(t, r2, http.StatusOK)
	if !bytes.Equal(r2.Body, rvraw) {
		t.Errorf("second revoke differs:\n%s\n%s", r2.Body, rvraw)
	}
	if g := a.do(t, env, "GET", credPath+"/"+target, nil); !bytes.Equal(g.Body, rvraw) {
		t.Errorf("GET after revoke differs:\n%s\n%s", g.Body, rvraw)
	}
	l = apiMustList(t, env, a, credPath+"?limit=100")
	if !slices.Contains(l.IDs, target) {
		t.Errorf("revoked credential not listed: %v", l.IDs)
	}
	for _, it := range l.Items {
		if it["id"] == target && it["revoked_at"] != ra {
			t.Errorf("listed revoked_at %v, want %v", it["revoked_at"], ra)
		}
	}
	l = apiMustList(t, env, a, credPath+"?limit=100&include_revoked=false")
	if slices.Contains(l.IDs, target) || len(l.IDs) != len(ids)-1 {
		t.Errorf("include_revoked=false: %v", l.IDs)
	}

	// Delete: the documented body; gone from every read.
	for _, id := range []string{target, ids[1]} { // a revoked one and a live one
		d, draw := apiMustOK(t, env, a, "DELETE", credPath+"/"+id, nil, http.StatusOK)
		if keys := apiMustKeys(t, draw); !slices.Equal(keys, []string{"id", "object", "deleted"}) ||
			d["id"] != id || d["object"] != "mcp.credential.deleted" || d["deleted"] != true {
			t.Errorf("delete body: %s", draw)
		}
		random := "mcp_cred_" + apiRandomHex(t)
		for _, c := range []struct{ method, suffix string }{{"GET", ""}, {"DELETE", ""}, {"POST", "/revoke"}} {
			gone := a.do(t, env, c.method, credPath+"/"+id+c.suffix, nil)
			apiMustError(t, gone, http.StatusNotFound, "not_found_error", nil)
			never := a.do(t, env, c.method, credPath+"/"+random+c.suffix, nil)
			if !bytes.Equal(gone.Body, never.Body) {
				t.Errorf("%s %s: deleted and never-existing differ:\n%s\n%s", c.method, c.suffix, gone.Body, never.Body)
			}
		}
		for _, q := range []string{"?limit=100", "?limit=100&include_revoked=false", "?limit=100&order=asc"} {
			if l := apiMustList(t, env, a, credPath+q); slices.Contains(l.IDs, id) {
				t.Errorf("deleted credential still listed (%s): %v", q, l.IDs)
			}
		}
	}
	if l := apiMustList(t, env, a, credPath+"?limit=100"); len(l.IDs) != len(ids)-2 {
		t.Errorf("after two deletes: %v", l.IDs)
	}
}

func TestDeleteServerDeletesItsCredentials(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	a := apiCallerA
	sid := apiMustCreateServer(t, env, a, nil)["id"].(string)
	other := apiMustCreateServer(t, env, a, nil)["id"].(string)
	var creds []string
	for i := 0; i < 3; i++ {
		creds = append(creds, apiMustCreateCredential(t, env, a, sid, map[string]any{"bearer_token": "tok-" + apiRandomHex(t)})["id"].(string))
	}
	apiMustOK(t, env, a, "POST", "/servers/"+sid+"/credentials/"+creds[0]+"/revoke", nil, http.StatusOK)
	keep := apiMustCreateCredential(t, env, a, other, map[string]any{"bearer_token": "other-token-1234"})["id"].(string)

	d, _ := apiMustOK(t, env, a, "DELETE", "/servers/"+sid, nil, http.StatusOK)
	if d["id"] != sid || d["object"] != "mcp.server.deleted" || d["deleted"] != true {
		t.Errorf("delete body %v", d)
	}
	for _, c := range creds {
		for _, op := range []struct{ method, suffix string }{{"GET", ""}, {"POST", "/revoke"}, {"DELETE", ""}} {
			apiMustError(t, a.do(t, env, op.method, "/servers/"+sid+"/credentials/"+c+op.suffix, nil),
				http.StatusNotFound, "not_found_error", nil)
		}
	}
	apiMustError(t, a.do(t, env, "GET", "/servers/"+sid+"/credentials", nil), http.StatusNotFound, "not_found_error", nil)
	// The other server and its credential are untouched.
	apiMustGet(t, env, a, "/servers/"+other+"/credentials/"+keep)
	if l := apiMustList(t, env, a, "/servers/"+other+"/credentials"); !slices.Equal(l.IDs, []string{keep}) {
		t.Errorf("other server's credentials: %v", l.IDs)
	}
}

func TestTimestampsAreNormalised(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	a := apiCallerA
	sid := apiMustCreateServer(t, env, a, nil)["id"].(string)
	for _, c := range []struct{ in, want string }{
		{"2099-01-01T14:00:00+02:00", "2099-01-01T12:00:00.000Z"},
		{"2099-01-01T06:30:00-05:30", "2099-01-01T12:00:00.000Z"},
		{"2099-06-15T12:00:00.123456789Z", "2099-06-15T12:00:00.123Z"},
		{"2099-06-15T12:00:00Z", "2099-06-15T12:00:00.000Z"},
		{"2099-06-15T23:59:59.5+00:00", "2099-06-15T23:59:59.500Z"},
		{"2099-12-31T23:30:00.25-01:00", "2100-01-01T00:30:00.250Z"},
		{"2099-01-01t12:00:00z", "2099-01-01T12:00:00.000Z"}, // RFC 3339 5.6: "t" and "z" may be lower case
		{"2099-01-01t14:00:00.9999+02:00", "2099-01-01T12:00:00.999Z"},
	} {
		cred := apiMustCreateCredential(t, env, a, sid, map[string]any{"bearer_token": "token-value-123", "expires_at": c.in})
		if cred["expires_at"] != c.want {
			t.Errorf("expires_at %q came back as %v, want %q", c.in, cred["expires_at"], c.want)
		}
		g := apiMustGet(t, env, a, "/servers/"+sid+"/credentials/"+cred["id"].(string))
		if g["expires_at"] != c.want {
			t.Errorf("expires_at %q read back as %v, want %q", c.in, g["expires_at"], c.want)
		}
		for _, k := range []string{"created_at", "updated_at"} {
			if !apiReTime.MatchString(g[k].(string)) {
				t.Errorf("%s %v is not millisecond-Z", k, g[k])
			}
		}
	}
	// expires_at null is accepted and stays null.
	cred := apiMustCreateCredential(t, env, a, sid, map[string]any{"bearer_token": "token-value-123", "expires_at": nil})
	if cred["expires_at"] != nil {
		t.Errorf("expires_at null came back as %v", cred["expires_at"])
	}
}

// TestReadYourWrites: a read sent after a write's answer sees that write.
func TestReadYourWrites(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	a := apiCallerA
	for i := 0; i < 50; i++ {
		s, sraw := apiMustOK(t, env, a, "POST", "/servers", map[string]any{"name": "s", "server_label": "l", "server_url": "https://example.com/mcp"}, http.StatusCreated)
		sid := s["id"].(string)
		if g := a.do(t, env, "GET", "/servers/"+sid, nil); g.Status != http.StatusOK || !bytes.Equal(g.Body, sraw) {
			t.Fatalf("round %d: GET server right after 201: %d %s", i, g.Status, g.Body)
		}
		if l := apiMustList(t, env, a, "/servers?limit=1"); len(l.IDs) != 1 || l.IDs[0] != sid {
			t.Fatalf("round %d: newest listed server %v, want %s", i, l.IDs, sid)
		}
		u, _ := apiMustOK(t, env, a, "POST", "/servers/"+sid, map[string]any{"name": "renamed"}, http.StatusOK)
		if g := apiMustGet(t, env, a, "/servers/"+sid); g["name"] != "renamed" || g["updated_at"] != u["updated_at"] {
			t.Fatalf("round %d: GET right after update: %v", i, g)
		}
		c, craw := apiMustOK(t, env, a, "POST", "/servers/"+sid+"/credentials", map[string]any{"bearer_token": "tok"}, http.StatusCreated)
		cid := c["id"].(string)
		if g := a.do(t, env, "GET", "/servers/"+sid+"/credentials/"+cid, nil); g.Status != http.StatusOK || !bytes.Equal(g.Body, craw) {
			t.Fatalf("round %d: GET credential right after 201: %d %s", i, g.Status, g.Body)
		}
		if i%5 == 0 {
			apiMustOK(t, env, a, "POST", "/servers/"+sid+"/credentials/"+cid+"/revoke", nil, http.StatusOK)
			if g := apiMustGet(t, env, a, "/servers/"+sid+"/credentials/"+cid); g["revoked_at"] == nil {
				t.Fatalf("round %d: GET right after revoke: %v", i, g)
			}
			apiMustOK(t, env, a, "DELETE", "/servers/"+sid, nil, http.StatusOK)
			apiMustError(t, a.do(t, env, "GET", "/servers/"+sid+"/credentials/"+cid, nil), http.StatusNotFound, "not_found_error", nil)
			apiMustError(t, a.do(t, env, "GET", "/servers/"+sid, nil), http.StatusNotFound, "not_found_error", nil)
		}
	}
}
