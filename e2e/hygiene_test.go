package e2e

// Secret hygiene (issue 3, point 7): canary secrets stored in all three
// secret fields, and a canary presented as an API key, go through every
// operation and error path; after the vault stops, no file under its
// directory (JetStream store, SQLite read model with -wal/-shm), no log line
// and no response body or header holds any canary in plain, base64 (any
// alignment, standard or URL-safe, padded or not) or hex form.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpvault/vault/internal/vaulttest"
)

// hygRandomHex returns 32 random lowercase hex characters.
func hygRandomHex(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// hygForms returns the forms in which secret could leak: plain, hex (lower
// and upper case) and base64 in the four alphabets/paddings — both the whole
// encoding and, for the secret embedded after 0, 1 or 2 other bytes, the part
// of the encoding that depends on the secret's bytes alone.
func hygForms(secret string) map[string]string {
	b := []byte(secret)
	forms := map[string]string{
		"plain": secret,
		"hex":   hex.EncodeToString(b),
		"HEX":   strings.ToUpper(hex.EncodeToString(b)),
	}
	encs := map[string]*base64.Encoding{
		"std": base64.StdEncoding, "url": base64.URLEncoding,
		"rawstd": base64.RawStdEncoding, "rawurl": base64.RawURLEncoding,
	}
	for name, enc := range encs {
		forms["base64-"+name] = enc.EncodeToString(b)
		for k := 0; k < 3; k++ {
			s := enc.EncodeToString(append(make([]byte, k), b...))
			if k > 0 {
				s = s[4:] // the first group mixes prefix and secret bytes
			}
			s = s[:len(s)-4] // the last group mixes secret and what follows (or padding)
			forms[fmt.Sprintf("base64-%s-shift%d", name, k)] = s
		}
	}
	return forms
}

// hygLeaks returns "canary/form" for every form of every canary in hay.
func hygLeaks(hay []byte, canaries map[string]string) []string {
	var out []string
	for cname, c := range canaries {
		for fname, f := range hygForms(c) {
			if len(f) >= 16 && bytes.Contains(hay, []byte(f)) {
				out = append(out, cname+"/"+fname)
			}
		}
	}
	sort.Strings(out)
	return out
}

// hygRecorder sends requests through env.Do and keeps every request and
// response, so they can be searched afterwards.
type hygRecorder struct {
	env       *vaulttest.Env
	mu        sync.Mutex
	requests  bytes.Buffer
	responses bytes.Buffer
	n         int
}

func (h *hygRecorder) do(tb testing.TB, r vaulttest.Request, want int) vaulttest.Response {
	tb.Helper()
	resp := h.env.Do(tb, r)
	h.mu.Lock()
	h.n++
	fmt.Fprintf(&h.requests, "%s %s key=%s user=%s header=%v\n", r.Method, r.Path, r.Key, r.User, r.Header)
	switch b := r.Body.(type) {
	case string:
		h.requests.WriteString(b)
	case []byte:
		h.requests.Write(b)
	case nil:
	default:
		fmt.Fprintf(&h.requests, "%v", b)
	}
	h.requests.WriteString("\n")
	fmt.Fprintf(&h.responses, "HTTP %d\n", resp.Status)
	for k, vs := range resp.Header {
		fmt.Fprintf(&h.responses, "%s: %s\n", k, strings.Join(vs, ", "))
	}
	h.responses.WriteString("\n")
	h.responses.Write(resp.Body)
	h.responses.WriteString("\n")
	h.mu.Unlock()
	if want != 0 && resp.Status != want {
		tb.Fatalf("%s %s: status %d, want %d: %s", r.Method, r.Path, resp.Status, want, resp.Body)
	}
	return resp
}

// hygUpstreams starts two loopback MCP endpoints: "good" lists one tool when
// the request carries one of the canary credentials (and counts which), and
// "hostile" refuses every request with a 401 that echoes the credentials it
// received in its body and headers — the vault must not relay them.
type hygUpstreams struct {
	Good, Hostile string
	mu            sync.Mutex
	seen          map[string]int
}

func startHygUpstreams(tb testing.TB, bearer, authz, header string) *hygUpstreams {
	tb.Helper()
	u := &hygUpstreams{seen: map[string]int{}}
	s := mcp.NewServer(&mcp.Implementation{Name: "hygiene-fixture", Version: "1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "issues.list", Description: "lists issues"},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var which string
		switch {
		case r.Header.Get("Authorization") == "Bearer "+bearer:
			which = "bearer"
		case r.Header.Get("Authorization") == authz:
			which = "authorization"
		case r.Header.Get("X-Api-Key") == header:
			which = "header"
		default:
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		u.mu.Lock()
		u.seen[which]++
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	tb.Cleanup(good.Close)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization") + " " + r.Header.Get("X-Api-Key")
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="rejected `+got+`"`)
		w.Header().Set("X-Echo", got)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":"invalid token %s","jsonrpc":"2.0","id":1}`, got)
	}))
	tb.Cleanup(hostile.Close)
	u.Good, u.Hostile = good.URL+"/mcp", hostile.URL+"/mcp"
	return u
}

func (u *hygUpstreams) count(which string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[which]
}

func TestHygieneCanariesNeverLeak(t *testing.T) {
	canaries := map[string]string{
		"bearer":  "canary-bearer-" + hygRandomHex(t),
		"auth":    "canary-auth-" + hygRandomHex(t),
		"header":  "canary-header-" + hygRandomHex(t),
		"api-key": "canary-apikey-" + hygRandomHex(t),
	}
	// The real API keys are secrets too: they must not be logged or stored.
	apiKeys := map[string]string{"key-a": vaulttest.KeyA, "key-b": vaulttest.KeyB}
	cb, ca, ch, ck := canaries["bearer"], canaries["auth"], canaries["header"], canaries["api-key"]

	// The search finds every form, at every alignment, inside other bytes.
	for cname, c := range canaries {
		hays := [][]byte{[]byte("x" + c + "y"), []byte("x" + hex.EncodeToString([]byte(c)) + "y"),
			[]byte("x" + strings.ToUpper(hex.EncodeToString([]byte(c))) + "y")}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			for k := 0; k < 3; k++ {
				for tail := 0; tail < 3; tail++ {
					raw := append(append([]byte("?>~"[:k]), c...), "\xff\xfe"[:tail]...)
					hays = append(hays, []byte("{\"v\":\""+enc.EncodeToString(raw)+"\"}"))
				}
			}
		}
		for i, hay := range hays {
			if len(hygLeaks(hay, map[string]string{cname: c})) == 0 {
				t.Fatalf("self-check: the search misses form %d of %s: %s", i, cname, hay)
			}
		}
	}

	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	rec := &hygRecorder{env: env}
	up := startHygUpstreams(t, cb, ca, ch)
	const (
		user  = "user-hygiene"
		c201  = http.StatusCreated
		c200  = http.StatusOK
		c400  = http.StatusBadRequest
		c401  = http.StatusUnauthorized
		c404  = http.StatusNotFound
		c413  = http.StatusRequestEntityTooLarge
		c415  = http.StatusUnsupportedMediaType
		c422  = http.StatusUnprocessableEntity
		idem  = "Idempotency-Key"
		creds = "/credentials"
	)
	do := func(method, path string, body any, want int, opts ...func(*vaulttest.Request)) map[string]any {
		t.Helper()
		r := vaulttest.Request{Method: method, Path: path, Body: body, User: user}
		for _, o := range opts {
			o(&r)
		}
		resp := rec.do(t, r, want)
		m := map[string]any{}
		if len(resp.Body) > 0 && resp.Body[0] == '{' {
			m = resp.JSON(t)
		}
		return m
	}
	withHeader := func(k, v string) func(*vaulttest.Request) {
		return func(r *vaulttest.Request) {
			if r.Header == nil {
				r.Header = map[string]string{}
			}
			r.Header[k] = v
		}
	}

	// Servers: create (with an Idempotency-Key, repeated and reused), update, read.
	srvBody := map[string]any{"name": "Fixture", "server_label": "fixture", "server_url": up.Good}
	srv := do("POST", "/servers", srvBody, c201, withHeader(idem, "hyg-srv-1"))["id"].(string)
	do("POST", "/servers", srvBody, c201, withHeader(idem, "hyg-srv-1"))
	do("POST", "/servers", map[string]any{"name": "Other", "server_label": "x", "server_url": up.Good}, c422, withHeader(idem, "hyg-srv-1"))
	do("POST", "/servers/"+srv, map[string]any{"server_description": "hygiene run", "metadata": map[string]string{"team": "qa"}}, c200)
	do("GET", "/servers", nil, c200)
	do("GET", "/servers/"+srv, nil, c200)
	hostile := do("POST", "/servers", map[string]any{"name": "Hostile", "server_label": "hostile", "server_url": up.Hostile}, c201)["id"].(string)

	// Credentials in all three secret fields, created with Idempotency-Keys,
	// each repeated (same answer) and reused with another body (422).
	credBodies := map[string]map[string]any{
		"bearer":        {"name": "bearer", "bearer_token": cb},
		"authorization": {"name": "authorization", "authorization": ca},
		"header":        {"name": "header", "headers": map[string]string{"X-Api-Key": ch, "X-Other": "plain"}},
	}
	credIDs := map[string]string{}
	for _, which := range []string{"bearer", "authorization", "header"} {
		key := withHeader(idem, "hyg-cred-"+which)
		first := do("POST", "/servers/"+srv+creds, credBodies[which], c201, key)
		credIDs[which] = first["id"].(string)
		again := do("POST", "/servers/"+srv+creds, credBodies[which], c201, key)
		if again["id"] != first["id"] {
			t.Fatalf("idempotent repeat created another credential: %v vs %v", again["id"], first["id"])
		}
		other := map[string]any{"name": "changed"}
		for k, v := range credBodies[which] {
			if k != "name" {
				other[k] = v
			}
		}
		do("POST", "/servers/"+srv+creds, other, c422, key)
	}
	hostileCred := do("POST", "/servers/"+hostile+creds, map[string]any{"bearer_token": cb}, c201)["id"].(string)
	do("POST", "/servers/"+hostile+creds, map[string]any{"authorization": ca}, c201)
	do("POST", "/servers/"+hostile+creds, map[string]any{"headers": map[string]string{"X-Api-Key": ch}}, c201)

	// Every read.
	do("GET", "/servers/"+srv+creds, nil, c200)
	do("GET", "/servers/"+srv+creds+"?include_revoked=false&order=asc&limit=1", nil, c200)
	for _, id := range credIDs {
		do("GET", "/servers/"+srv+creds+"/"+id, nil, c200)
	}

	// Validation failures that carry canaries.
	bad := []struct {
		name string
		body any
	}{
		{"unknown field", map[string]any{"bearer_token": cb, "bogus": true}},
		{"none with bearer", map[string]any{"auth_type": "none", "bearer_token": cb}},
		{"bearer with authorization", map[string]any{"auth_type": "bearer", "authorization": ca}},
		{"two secrets", map[string]any{"bearer_token": cb, "authorization": ca}},
		{"headers with bearer type", map[string]any{"auth_type": "bearer", "headers": map[string]string{"X-Api-Key": ch}}},
		{"hop-by-hop header", map[string]any{"headers": map[string]string{"Connection": ch}}},
		{"header value with CRLF", map[string]any{"headers": map[string]string{"X-Api-Key": ch + "\r\nX-Evil: 1"}}},
		{"bad header name", map[string]any{"headers": map[string]string{"Bad Name": ch}}},
		{"bearer with control char", map[string]any{"bearer_token": cb + "\x00"}},
		{"bearer too long", map[string]any{"bearer_token": cb + strings.Repeat("z", 8200)}},
		{"expired", map[string]any{"bearer_token": cb, "expires_at": "2001-01-01T00:00:00Z"}},
		{"bad expires_at", map[string]any{"authorization": ca, "expires_at": ca}},
		{"bearer wrong type", map[string]any{"bearer_token": []string{cb}}},
		{"headers wrong type", map[string]any{"headers": ch}},
		{"header value wrong type", map[string]any{"headers": map[string]any{"X-Api-Key": []string{ch}}}},
		{"bad auth_type", map[string]any{"auth_type": cb}},
		{"malformed JSON", `{"bearer_token":"` + cb + `"`},
		{"trailing data", `{"bearer_token":"` + cb + `"} {"authorization":"` + ca + `"}`},
		{"not an object", `["` + cb + `"]`},
	}
	for _, b := range bad {
		m := do("POST", "/servers/"+srv+creds, b.body, c400)
		if m["error"] == nil {
			t.Fatalf("%s: no error object", b.name)
		}
	}
	// A validation failure on an idempotent create, then the same key again.
	do("POST", "/servers/"+srv+creds, map[string]any{"auth_type": "none", "bearer_token": cb}, c400, withHeader(idem, "hyg-bad-1"))
	rec.do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + creds, User: user,
		Body: map[string]any{"auth_type": "none", "bearer_token": cb}, Header: map[string]string{idem: "hyg-bad-1"}}, 0)

	// 415 and 413 with canaries in the body.
	do("POST", "/servers/"+srv+creds, `{"bearer_token":"`+cb+`"}`, c415, withHeader("Content-Type", "text/plain"))
	do("POST", "/servers/"+srv+creds, `bearer_token=`+ca, c415, withHeader("Content-Type", "application/x-www-form-urlencoded"))
	big := `{"bearer_token":"` + cb + `","name":"` + strings.Repeat(ch, (1<<20)/len(ch)+1) + `"}`
	do("POST", "/servers/"+srv+creds, big, c413)
	do("POST", "/servers/"+srv+creds, big, c413, withHeader(idem, "hyg-big"))

	// Invalid API keys: a canary key, a malformed header carrying it, and a
	// canary body with a canary key; and another account touching our server.
	rec.do(t, vaulttest.Request{Method: "GET", Path: "/servers", Key: ck}, c401)
	rec.do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + creds, Key: ck, Body: map[string]any{"bearer_token": cb}}, c401)
	rec.do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + creds, Key: "-", Body: map[string]any{"bearer_token": cb},
		Header: map[string]string{"Authorization": "Basic " + ck}}, c401)
	rec.do(t, vaulttest.Request{Method: "GET", Path: "/servers", Key: "-", Header: map[string]string{"Authorization": ck}}, c401)
	rec.do(t, vaulttest.Request{Method: "DELETE", Path: "/servers/" + srv, Key: ck}, c401)
	rec.do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + creds, Key: vaulttest.KeyB, User: user, Body: map[string]any{"bearer_token": cb}}, c404)
	rec.do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + creds, Body: map[string]any{"bearer_token": cb}}, c404) // same account, no user
	do("POST", "/servers/mcp_srv_00000000000000000000000000000000"+creds, map[string]any{"bearer_token": cb}, c404)
	do("POST", "/servers/not-an-id"+creds, map[string]any{"authorization": ca}, c404)

	// testServer: each credential against the good upstream (the canary is
	// really decrypted and sent), the hostile upstream that echoes it, an
	// unreachable URL, and malformed bodies.
	for _, which := range []string{"bearer", "authorization", "header"} {
		m := do("POST", "/servers/"+srv+"/test", map[string]any{"credential_id": credIDs[which]}, c200)
		if m["connected"] != true {
			t.Fatalf("testServer with the %s credential against the good upstream: %v", which, m)
		}
	}
	for _, which := range []string{"bearer", "authorization", "header"} {
		if up.count(which) == 0 {
			t.Fatalf("the good upstream never received the %s canary: testServer did not use the secret", which)
		}
	}
	do("POST", "/servers/"+srv+"/test", nil, c200, withHeader(idem, "hyg-test-1"))
	do("POST", "/servers/"+srv+"/test", nil, c200, withHeader(idem, "hyg-test-1"))
	if m := do("POST", "/servers/"+hostile+"/test", map[string]any{"credential_id": hostileCred}, c200); m["connected"] != false {
		t.Fatalf("testServer against the hostile upstream: %v", m)
	}
	do("POST", "/servers/"+hostile+"/test", map[string]any{}, c200)
	do("POST", "/servers/"+srv+"/test", map[string]any{"credential_id": cb}, c400)
	do("POST", "/servers/"+srv+"/test", map[string]any{"credential_id": credIDs["bearer"], "bearer_token": cb}, c400)
	do("POST", "/servers/"+srv+"/test", `{"credential_id":"`+ca+`"`, c400)
	unreachable := do("POST", "/servers", map[string]any{"name": "Down", "server_label": "down", "server_url": "http://127.0.0.1:1/mcp"}, c201)["id"].(string)
	do("POST", "/servers/"+unreachable+creds, map[string]any{"headers": map[string]string{"X-Api-Key": ch}}, c201)
	if m := do("POST", "/servers/"+unreachable+"/test", nil, c200); m["connected"] != false {
		t.Fatalf("testServer against 127.0.0.1:1: %v", m)
	}
	do("POST", "/servers/"+srv, map[string]any{"server_url": "http://127.0.0.1:1/"}, c200)
	if m := do("POST", "/servers/"+srv+"/test", map[string]any{"credential_id": credIDs["authorization"]}, c200); m["connected"] != false {
		t.Fatalf("testServer against 127.0.0.1:1: %v", m)
	}
	do("POST", "/servers/"+srv, map[string]any{"server_url": up.Good}, c200)

	// Revoke (twice, with an Idempotency-Key, and with a bad body), use the
	// revoked credential, delete a credential and a server.
	revoke := "/servers/" + srv + creds + "/" + credIDs["bearer"] + "/revoke"
	do("POST", revoke, map[string]any{"bearer_token": cb}, c400)
	do("POST", revoke, nil, c200, withHeader(idem, "hyg-revoke"))
	do("POST", revoke, nil, c200, withHeader(idem, "hyg-revoke"))
	do("POST", revoke, map[string]any{}, c200)
	if m := do("POST", "/servers/"+srv+"/test", map[string]any{"credential_id": credIDs["bearer"]}, c200); m["connected"] != false {
		t.Fatalf("testServer with a revoked credential: %v", m)
	}
	do("DELETE", "/servers/"+srv+creds+"/"+credIDs["authorization"], nil, c200)
	do("DELETE", "/servers/"+srv+creds+"/"+credIDs["authorization"], nil, c404)
	do("GET", "/servers/"+srv+creds+"/"+credIDs["authorization"], nil, c404)
	do("DELETE", "/servers/"+hostile, nil, c200)
	do("GET", "/servers/"+hostile+creds, nil, c404)
	do("GET", "/servers/"+srv+creds, nil, c200)
	do("GET", "/servers", nil, c200)
	rec.do(t, vaulttest.Request{Method: "GET", Path: "!/healthz", Key: ck}, c200)
	rec.do(t, vaulttest.Request{Method: "GET", Path: "!/readyz", Key: ck}, c200)
	rec.do(t, vaulttest.Request{Method: "GET", Path: "!/metrics", Key: ck}, c200)
	rec.do(t, vaulttest.Request{Method: "GET", Path: "!/no/such/route", Key: ck}, 0)

	// Stop everything so that every buffer is on disk, then search.
	env.StopAll()
	t.Logf("%d requests recorded, %d bytes of responses, %d bytes of logs", rec.n, rec.responses.Len(), len(env.Logs.String()))

	// Non-vacuous: the search finds the canaries where they must be.
	if got := hygLeaks(rec.requests.Bytes(), canaries); len(got) == 0 {
		t.Fatal("the search finds no canary in the test's own requests")
	}
	for cname, c := range canaries {
		if !bytes.Contains(rec.requests.Bytes(), []byte(c)) {
			t.Fatalf("the test's own requests do not contain the %s canary", cname)
		}
	}

	all := map[string]string{}
	for k, v := range canaries {
		all[k] = v
	}
	for k, v := range apiKeys {
		all[k] = v
	}
	if got := hygLeaks(rec.responses.Bytes(), all); len(got) > 0 {
		t.Errorf("responses leak %v", got)
	}
	if got := hygLeaks([]byte(env.Logs.String()), all); len(got) > 0 {
		t.Errorf("logs leak %v", got)
	}
	needles := map[string][]byte{}
	for cname, c := range all {
		for fname, f := range hygForms(c) {
			needles[cname+"/"+fname] = []byte(f)
		}
	}
	// Non-vacuous for the disk: the same search finds what is stored in
	// clear — the ids of a live credential — both in the JetStream store and
	// in the SQLite read model.
	needles["control/credential-id"] = []byte(credIDs["header"])
	files := shredScanTree(t, env.Dir, needles)
	var inStream, inSQLite bool
	for _, f := range files["control/credential-id"] {
		inStream = inStream || strings.HasPrefix(f, "jetstream")
		inSQLite = inSQLite || strings.Contains(f, "readmodel.sqlite")
	}
	if !inStream || !inSQLite {
		t.Fatalf("the disk search does not find a stored credential id (found in %v): it searches the wrong place", files["control/credential-id"])
	}
	delete(files, "control/credential-id")
	for name, where := range files {
		t.Errorf("%s found on disk in %v", name, where)
	}
}
