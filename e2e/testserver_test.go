package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
)

// ---- fixtures: in-process MCP servers ---------------------------------------

// tsSeen is what an MCP fixture observed for one HTTP request.
type tsSeen struct {
	Method string
	Path   string
	Header http.Header
	RPC    string // JSON-RPC method of a POST body, if any
}

// tsRecorder collects the requests an MCP fixture saw.
type tsRecorder struct {
	mu   sync.Mutex
	reqs []tsSeen
}

func (r *tsRecorder) add(s tsSeen) {
	r.mu.Lock()
	r.reqs = append(r.reqs, s)
	r.mu.Unlock()
}

func (r *tsRecorder) all() []tsSeen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func (r *tsRecorder) reset() {
	r.mu.Lock()
	r.reqs = nil
	r.mu.Unlock()
}

func (r *tsRecorder) countRPC(method string) int {
	n := 0
	for _, s := range r.all() {
		if s.RPC == method {
			n++
		}
	}
	return n
}

// authorizations returns the distinct Authorization values seen ("" = none).
func (r *tsRecorder) authorizations() []string {
	var out []string
	for _, s := range r.all() {
		v := strings.Join(s.Header.Values("Authorization"), ",")
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// tsCredHeaders are every header name a fixture credential may set; the
// fixtures check each of them on every request.
var tsCredHeaders = []string{"Authorization", "X-Api-Key", "X-Tenant"}

// tsExactly answers whether h carries exactly the credential headers want
// (canonical name → value) and none of the other credential headers.
func tsExactly(h http.Header, want map[string]string) bool {
	for _, name := range tsCredHeaders {
		got := h.Values(name)
		v, ok := want[name]
		if ok && (len(got) != 1 || got[0] != v) || !ok && len(got) != 0 {
			return false
		}
	}
	return true
}

// tsMiddleware records every request and answers 401 unless accept approves
// its headers.
func tsMiddleware(accept func(http.Header) bool, rec *tsRecorder, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := tsSeen{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()}
		if r.Method == http.MethodPost && r.Body != nil {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var msg struct {
				Method string `json:"method"`
			}
			_ = json.Unmarshal(body, &msg)
			seen.RPC = msg.Method
		}
		rec.add(seen)
		if !accept(r.Header) {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

type tsNoArgs struct{}

// tsMCPServer builds an MCP server offering the given tools.
func tsMCPServer(tools ...string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "e2e-fixture", Version: "1.0.0"}, nil)
	for _, name := range tools {
		mcp.AddTool(s, &mcp.Tool{Name: name, Description: "fixture tool"},
			func(context.Context, *mcp.CallToolRequest, tsNoArgs) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{}, nil, nil
			})
	}
	return s
}

// tsServe serves an MCP server with tools over Streamable HTTP (sse=false)
// or the older HTTP+SSE transport (sse=true) on a loopback httptest server,
// behind a middleware that records requests and demands what accept
// approves. It returns the MCP URL.
func tsServe(tb testing.TB, sse bool, accept func(http.Header) bool, rec *tsRecorder, tools ...string) string {
	tb.Helper()
	s := tsMCPServer(tools...)
	var h http.Handler
	if sse {
		h = mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s }, nil)
	} else {
		h = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", tsMiddleware(accept, rec, h))
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// tsCountingListener counts the TCP connections it accepts.
type tsCountingListener struct {
	ln       net.Listener
	accepted chan string
}

func tsMustCountingListener(tb testing.TB) *tsCountingListener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cl := &tsCountingListener{ln: ln, accepted: make(chan string, 1024)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cl.accepted <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return cl
}

func (cl *tsCountingListener) port() string {
	_, p, _ := net.SplitHostPort(cl.ln.Addr().String())
	return p
}

// acceptedBeforeSentinel connects once more and returns how many
// connections were accepted before that one (accepts happen in order).
func (cl *tsCountingListener) acceptedBeforeSentinel(tb testing.TB) int {
	tb.Helper()
	c, err := net.Dial("tcp", cl.ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	sentinel := c.LocalAddr().String()
	n := 0
	safety := time.After(10 * time.Second)
	for {
		select {
		case addr := <-cl.accepted:
			if addr == sentinel {
				return n
			}
			n++
		case <-safety:
			tb.Fatal("sentinel connection was never accepted")
		}
	}
}

// ---- fixtures: calling the vault --------------------------------------------

// tsCreateServer registers url (with optional extra fields) and returns its id.
func tsCreateServer(tb testing.TB, env *vaulttest.Env, url string, extra map[string]any) string {
	tb.Helper()
	body := map[string]any{"name": "Fixture", "server_label": "fixture", "server_url": url}
	for k, v := range extra {
		body[k] = v
	}
	return env.MustCreateServer(tb, "", body)
}

// tsTest calls testServer with an optional credential ID and returns the
// answer, failing unless it is a 200 with exactly the documented keys.
func tsTest(tb testing.TB, env *vaulttest.Env, serverID, credID string) (vaulttest.Response, map[string]any) {
	tb.Helper()
	var body any
	if credID != "" {
		body = map[string]any{"credential_id": credID}
	}
	r := env.Do(tb, vaulttest.Request{Method: "POST", Path: "/servers/" + serverID + "/test", Body: body})
	if r.Status != http.StatusOK {
		tb.Fatalf("test %s: %d %s", serverID, r.Status, r.Body)
	}
	m := r.JSON(tb)
	want := []string{"connected", "object", "server_id", "tool_count", "tool_names"}
	if m["connected"] != true {
		want = append(want, "error")
		slices.Sort(want)
	}
	if got := tsKeys(m); !slices.Equal(got, want) {
		tb.Fatalf("test answer keys %q, want %q: %s", got, want, r.Body)
	}
	if m["server_id"] != serverID || m["object"] != "mcp.server.test" {
		tb.Fatalf("test answer server_id/object: %s", r.Body)
	}
	names, ok := m["tool_names"].([]any)
	if !ok {
		tb.Fatalf("tool_names is not an array: %s", r.Body)
	}
	if n, ok := m["tool_count"].(float64); !ok || int(n) != len(names) {
		tb.Fatalf("tool_count does not match tool_names: %s", r.Body)
	}
	return r, m
}

func tsKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// tsMustConnected checks a connected answer listing exactly tools.
func tsMustConnected(tb testing.TB, r vaulttest.Response, m map[string]any, tools ...string) {
	tb.Helper()
	if m["connected"] != true {
		tb.Fatalf("want connected:true, got %s", r.Body)
	}
	var got []string
	for _, n := range m["tool_names"].([]any) {
		got = append(got, n.(string))
	}
	slices.Sort(got)
	want := slices.Clone(tools)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		tb.Fatalf("tool_names %q, want %q (%s)", got, want, r.Body)
	}
}

// tsMustFailed checks a connected:false answer with error code code.
func tsMustFailed(tb testing.TB, r vaulttest.Response, m map[string]any, code string) {
	tb.Helper()
	if m["connected"] != false || m["tool_count"] != float64(0) || len(m["tool_names"].([]any)) != 0 {
		tb.Fatalf("want connected:false, tool_count 0, tool_names []: %s", r.Body)
	}
	if !bytes.Contains(r.Body, []byte(`"tool_names":[]`)) {
		tb.Fatalf("tool_names must be an empty array: %s", r.Body)
	}
	e, ok := m["error"].(map[string]any)
	if !ok {
		tb.Fatalf("error is not an object: %s", r.Body)
	}
	if got := tsKeys(e); !slices.Equal(got, []string{"code", "message"}) {
		tb.Fatalf("error keys %q, want code+message: %s", got, r.Body)
	}
	if e["code"] != code {
		tb.Fatalf("error code %v, want %q: %s", e["code"], code, r.Body)
	}
	if msg, _ := e["message"].(string); msg == "" {
		tb.Fatalf("empty error message: %s", r.Body)
	}
}

// tsGetCredential reads a credential through the API.
func tsGetCredential(tb testing.TB, env *vaulttest.Env, serverID, credID string) map[string]any {
	tb.Helper()
	r := env.Do(tb, vaulttest.Request{Method: "GET", Path: "/servers/" + serverID + "/credentials/" + credID})
	if r.Status != http.StatusOK {
		tb.Fatalf("get credential: %d %s", r.Status, r.Body)
	}
	return r.JSON(tb)
}

// tsSecretForms are the spellings of a secret that must never appear.
func tsSecretForms(secrets ...string) []string {
	var out []string
	for _, s := range secrets {
		b := []byte(s)
		out = append(out, s,
			base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
			base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
			hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)))
	}
	return out
}

// tsMustNoSecret fails when any form of a secret appears in data.
func tsMustNoSecret(tb testing.TB, where string, data []byte, secrets ...string) {
	tb.Helper()
	for _, f := range tsSecretForms(secrets...) {
		if bytes.Contains(data, []byte(f)) {
			tb.Fatalf("secret form %q leaked into %s", f, where)
		}
	}
}

func tsHeaderBytes(h http.Header) []byte {
	var b bytes.Buffer
	_ = h.Write(&b)
	return b.Bytes()
}

// tsLastEvent reads the newest stream message on subject.
func tsLastEvent(tb testing.TB, env *vaulttest.Env, subject string) *jetstream.RawStreamMsg {
	tb.Helper()
	js := vaulttest.MustJetStream(tb, env.NATSURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, env.Stream)
	if err != nil {
		tb.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		tb.Fatalf("last message on %s: %v", subject, err)
	}
	return msg
}

// tsUsedEvent is the envelope of an mcp.credential.used event.
type tsUsedEvent struct {
	Type        string `json:"type"`
	AggregateID string `json:"aggregate_id"`
	ServerID    string `json:"server_id"`
	Owner       struct {
		Account string `json:"account"`
	} `json:"owner"`
	Data map[string]any `json:"data"`
}

// tsMustUsedEvent reads the newest use event of a credential (on its .used
// subject), checks it is an mcp.credential.used event carrying no secret,
// and returns it.
func tsMustUsedEvent(tb testing.TB, env *vaulttest.Env, serverID, credID string, secrets ...string) tsUsedEvent {
	tb.Helper()
	msg := tsLastEvent(tb, env, events.UseSubject(serverID, credID))
	tsMustNoSecret(tb, "the stream event", msg.Data, secrets...)
	for k, vs := range msg.Header {
		tsMustNoSecret(tb, "the stream event headers", []byte(k+": "+strings.Join(vs, ",")), secrets...)
	}
	var ev tsUsedEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		tb.Fatalf("event is not JSON: %v: %s", err, msg.Data)
	}
	if ev.Type != "mcp.credential.used" || ev.AggregateID != credID || ev.ServerID != serverID || ev.Owner.Account != "acct_a" {
		tb.Fatalf("newest event of the credential is not its use: %s", msg.Data)
	}
	return ev
}

// ---- tests ------------------------------------------------------------------

// tsAuthCase is one auth type: the credential body and the headers the MCP
// server must see (exactly).
type tsAuthCase struct {
	name    string
	body    map[string]any
	headers map[string]string
	secrets []string
}

var tsAuthCases = []tsAuthCase{
	{"bearer", map[string]any{"bearer_token": "tok-bearer-e2e-0123456789"},
		map[string]string{"Authorization": "Bearer tok-bearer-e2e-0123456789"}, []string{"tok-bearer-e2e-0123456789"}},
	{"authorization", map[string]any{"authorization": "Token raw-authz-e2e-456"},
		map[string]string{"Authorization": "Token raw-authz-e2e-456"}, []string{"raw-authz-e2e-456"}},
	{"headers", map[string]any{"headers": map[string]any{"X-Api-Key": "key-e2e-789", "x-tenant": "acme-tenant"}},
		map[string]string{"X-Api-Key": "key-e2e-789", "X-Tenant": "acme-tenant"}, []string{"key-e2e-789", "acme-tenant"}},
	{"none", map[string]any{"auth_type": "none"}, map[string]string{}, nil},
}

func TestTestServerAuthTypes(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	for _, sse := range []bool{false, true} {
		kind := map[bool]string{false: "streamable", true: "sse"}[sse]
		for _, tc := range tsAuthCases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				rec := &tsRecorder{}
				accept := func(h http.Header) bool { return tsExactly(h, tc.headers) }
				url := tsServe(t, sse, accept, rec, "alpha", "beta", "gamma")
				sid := tsCreateServer(t, env, url, nil)
				cred := env.MustCreateCredential(t, "", sid, tc.body)

				r, m := tsTest(t, env, sid, "")
				tsMustConnected(t, r, m, "alpha", "beta", "gamma")
				tsMustNoSecret(t, "the answer", r.Body, tc.secrets...)

				reqs := rec.all()
				if rec.countRPC("initialize") == 0 || rec.countRPC("tools/list") == 0 {
					t.Fatalf("the MCP server did not see initialize and tools/list: %+v", reqs)
				}
				for i, s := range reqs {
					if !tsExactly(s.Header, tc.headers) {
						t.Fatalf("request %d (%s %s %s) did not carry exactly %v: %v", i, s.Method, s.Path, s.RPC, tc.headers, s.Header)
					}
				}
				if sse && !slices.ContainsFunc(reqs, func(s tsSeen) bool { return s.Method == http.MethodGet }) {
					t.Fatal("the SSE variant never opened the event stream (GET)")
				}
				got := tsGetCredential(t, env, sid, cred["id"].(string))
				if tc.name == "none" {
					// Nothing secret was sent, so nothing is recorded.
					if got["last_used_at"] != nil {
						t.Fatalf("a none credential got last_used_at: %v", got)
					}
				} else if got["last_used_at"] == nil {
					t.Fatalf("last_used_at not set after a successful test: %v", got)
				}
			})
		}
	}
	t.Run("no credential at all", func(t *testing.T) {
		rec := &tsRecorder{}
		url := tsServe(t, false, func(h http.Header) bool { return tsExactly(h, nil) }, rec, "alpha")
		sid := tsCreateServer(t, env, url, nil)
		r, m := tsTest(t, env, sid, "")
		tsMustConnected(t, r, m, "alpha")
		if len(rec.all()) == 0 {
			t.Fatal("the MCP server saw no request")
		}
	})
}

func TestTestServerWrongTokenLeaksNothing(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	const good, wrong = "right-token-e2e-0123456789", "wrong-token-e2e-ABCDEFGHIJ"
	for _, sse := range []bool{false, true} {
		t.Run(map[bool]string{false: "streamable", true: "sse"}[sse], func(t *testing.T) {
			rec := &tsRecorder{}
			url := tsServe(t, sse, func(h http.Header) bool { return h.Get("Authorization") == "Bearer "+good }, rec, "alpha")
			sid := tsCreateServer(t, env, url, nil)
			cred := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": wrong})
			cid := cred["id"].(string)

			r, m := tsTest(t, env, sid, "")
			tsMustFailed(t, r, m, "credential_rejected")
			tsMustNoSecret(t, "the answer body", r.Body, wrong, "Bearer "+wrong)
			tsMustNoSecret(t, "the answer headers", tsHeaderBytes(r.Header), wrong, "Bearer "+wrong)
			if got := rec.authorizations(); !slices.Equal(got, []string{"Bearer " + wrong}) {
				t.Fatalf("the MCP server saw Authorization values %q", got)
			}

			// The attempt is still a use: recorded as failed, without the secret.
			if tsGetCredential(t, env, sid, cid)["last_used_at"] == nil {
				t.Fatal("last_used_at not set after the credential was sent")
			}
			ev := tsMustUsedEvent(t, env, sid, cid, wrong)
			if ev.Data["operation"] != "test" || ev.Data["outcome"] != "failed" ||
				ev.Data["error_code"] != "credential_rejected" || ev.Data["tool_count"] != float64(0) {
				t.Fatalf("use event data: %v", ev.Data)
			}
			tsMustNoSecret(t, "the logs", []byte(env.Logs.String()), wrong)
		})
	}
}

func TestTestServerAllowedTools(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	rec := &tsRecorder{}
	url := tsServe(t, false, func(http.Header) bool { return true }, rec, "alpha", "beta", "gamma", "delta")
	sid := tsCreateServer(t, env, url, map[string]any{"allowed_tools": []string{"gamma", "alpha", "not-offered"}})
	r, m := tsTest(t, env, sid, "")
	tsMustConnected(t, r, m, "alpha", "gamma")

	// Clearing the filter shows every tool again; an empty list shows none.
	for _, tc := range []struct {
		allowed any
		want    []string
	}{{nil, []string{"alpha", "beta", "gamma", "delta"}}, {[]string{}, nil}} {
		u := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid, Body: map[string]any{"allowed_tools": tc.allowed}})
		if u.Status != http.StatusOK {
			t.Fatalf("update allowed_tools: %d %s", u.Status, u.Body)
		}
		r, m := tsTest(t, env, sid, "")
		tsMustConnected(t, r, m, tc.want...)
	}
}

func TestTestServerCredentialSelection(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	const t1, t2, t3 = "token-one-older-0123456789", "token-two-newer-0123456789", "token-three-expiring-012345"
	valid := []string{"Bearer " + t1, "Bearer " + t2, "Bearer " + t3}
	rec := &tsRecorder{}
	url := tsServe(t, false, func(h http.Header) bool { return slices.Contains(valid, h.Get("Authorization")) }, rec, "alpha")
	sid := tsCreateServer(t, env, url, nil)
	c1 := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": t1})["id"].(string)
	c2 := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": t2})["id"].(string)

	// run calls test and returns the Authorization values the server saw.
	run := func(t *testing.T, credID string) (vaulttest.Response, map[string]any, []string) {
		t.Helper()
		rec.reset()
		r, m := tsTest(t, env, sid, credID)
		return r, m, rec.authorizations()
	}

	t.Run("newest usable by default", func(t *testing.T) {
		r, m, seen := run(t, "")
		tsMustConnected(t, r, m, "alpha")
		if !slices.Equal(seen, []string{"Bearer " + t2}) {
			t.Fatalf("server saw %q, want only the newest credential", seen)
		}
	})
	t.Run("explicit credential wins", func(t *testing.T) {
		before := tsGetCredential(t, env, sid, c2)["last_used_at"]
		r, m, seen := run(t, c1)
		tsMustConnected(t, r, m, "alpha")
		if !slices.Equal(seen, []string{"Bearer " + t1}) {
			t.Fatalf("server saw %q, want only the explicit credential", seen)
		}
		if tsGetCredential(t, env, sid, c1)["last_used_at"] == nil {
			t.Fatal("explicit credential has no last_used_at")
		}
		if after := tsGetCredential(t, env, sid, c2)["last_used_at"]; after != before {
			t.Fatalf("the unused credential's last_used_at moved: %v -> %v", before, after)
		}
	})
	t.Run("revoked is never sent", func(t *testing.T) {
		if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/credentials/" + c2 + "/revoke"}); r.Status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		lastUsed := tsGetCredential(t, env, sid, c2)["last_used_at"]
		r, m, seen := run(t, c2)
		tsMustFailed(t, r, m, "credential_revoked")
		if len(seen) != 0 {
			t.Fatalf("explicit revoked credential: server saw requests %q", seen)
		}
		tsMustNoSecret(t, "the answer", r.Body, t2)
		r, m, seen = run(t, "")
		tsMustConnected(t, r, m, "alpha")
		if !slices.Equal(seen, []string{"Bearer " + t1}) {
			t.Fatalf("implicit after revoke: server saw %q, want the older usable credential", seen)
		}
		if got := tsGetCredential(t, env, sid, c2)["last_used_at"]; got != lastUsed {
			t.Fatalf("revoked credential's last_used_at moved: %v -> %v", lastUsed, got)
		}
	})
	t.Run("expired is not used", func(t *testing.T) {
		expires := time.Now().Add(2500 * time.Millisecond)
		c3 := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": t3,
			"expires_at": expires.UTC().Format(time.RFC3339Nano)})["id"].(string)
		// While it is valid it is the newest usable one.
		r, m, seen := run(t, "")
		tsMustConnected(t, r, m, "alpha")
		if !slices.Equal(seen, []string{"Bearer " + t3}) {
			t.Fatalf("before expiry: server saw %q, want the expiring credential", seen)
		}
		vaulttest.Eventually(t, 10*time.Second, func() bool { return time.Now().After(expires.Add(100 * time.Millisecond)) })
		lastUsed := tsGetCredential(t, env, sid, c3)["last_used_at"]
		r, m, seen = run(t, "")
		tsMustConnected(t, r, m, "alpha")
		if !slices.Equal(seen, []string{"Bearer " + t1}) {
			t.Fatalf("after expiry: server saw %q, want the older usable credential", seen)
		}
		r, m, seen = run(t, c3)
		tsMustFailed(t, r, m, "credential_expired")
		if len(seen) != 0 {
			t.Fatalf("explicit expired credential: server saw requests %q", seen)
		}
		if got := tsGetCredential(t, env, sid, c3)["last_used_at"]; got != lastUsed {
			t.Fatalf("expired credential's last_used_at moved: %v -> %v", lastUsed, got)
		}
	})
	t.Run("none usable means no auth", func(t *testing.T) {
		if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/credentials/" + c1 + "/revoke"}); r.Status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		r, m, seen := run(t, "")
		// The fixture demands a token, so going without one is refused.
		tsMustFailed(t, r, m, "credential_rejected")
		if !slices.Equal(seen, []string{""}) {
			t.Fatalf("with no usable credential the server saw Authorization %q, want none", seen)
		}
	})
}

func TestTestServerBlockedDestination(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: false})
	cl := tsMustCountingListener(t)
	const token = "blocked-token-e2e-0123456789"
	for _, host := range []string{"127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "0x7f000001", "0177.0.0.1"} {
		t.Run(host, func(t *testing.T) {
			u := "http://" + host + ":" + cl.port() + "/mcp"
			r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers",
				Body: map[string]any{"name": "Blocked", "server_label": "blocked", "server_url": u}})
			if r.Status == http.StatusBadRequest {
				t.Skipf("createServer refuses %s up front: %s", u, r.Body)
			}
			if r.Status != http.StatusCreated {
				t.Fatalf("create server: %d %s", r.Status, r.Body)
			}
			sid := r.JSON(t)["id"].(string)
			cid := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": token})["id"].(string)
			r, m := tsTest(t, env, sid, "")
			tsMustFailed(t, r, m, "destination_blocked")
			tsMustNoSecret(t, "the answer", r.Body, token)
			if got := tsGetCredential(t, env, sid, cid)["last_used_at"]; got != nil {
				t.Fatalf("a credential that was never sent got last_used_at %v", got)
			}
		})
	}
	if n := cl.acceptedBeforeSentinel(t); n != 0 {
		t.Fatalf("the listener accepted %d connections from blocked tests", n)
	}
}

func TestTestServerRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	cl := tsMustCountingListener(t)
	const token = "redirect-token-e2e-0123456789"
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+cl.port()+"/mcp", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	sid := tsCreateServer(t, env, redirector.URL+"/mcp", nil)
	env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": token})
	r, m := tsTest(t, env, sid, "")
	tsMustFailed(t, r, m, "redirect_blocked")
	tsMustNoSecret(t, "the answer", r.Body, token)
	if n := cl.acceptedBeforeSentinel(t); n != 0 {
		t.Fatalf("the redirect target accepted %d connections", n)
	}
}

func TestTestServerTimeout(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	done := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never answers while the test runs
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(silent.Close)
	t.Cleanup(func() { close(done) }) // runs before silent.Close
	sid := tsCreateServer(t, env, silent.URL+"/mcp", nil)
	const token = "timeout-token-e2e-0123456789"
	cid := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": token})["id"].(string)

	start := time.Now()
	r, m := tsTest(t, env, sid, "")
	took := time.Since(start)
	tsMustFailed(t, r, m, "timeout")
	if took >= 15*time.Second {
		t.Fatalf("the test took %s, over the limit", took)
	}
	if took < 5*time.Second {
		t.Fatalf("the test gave up after only %s; the limit is about 10 s", took)
	}
	tsMustNoSecret(t, "the answer", r.Body, token)
	// The request carrying the credential reached the server: that is a use.
	ev := tsMustUsedEvent(t, env, sid, cid, token)
	if ev.Data["outcome"] != "failed" || ev.Data["error_code"] != "timeout" {
		t.Fatalf("use event data: %v", ev.Data)
	}
}

func TestTestServerRecordsUse(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	const token = "use-token-e2e-0123456789"
	rec := &tsRecorder{}
	url := tsServe(t, false, func(h http.Header) bool { return h.Get("Authorization") == "Bearer "+token }, rec, "alpha", "beta", "gamma")
	sid := tsCreateServer(t, env, url, map[string]any{"allowed_tools": []string{"alpha", "beta"}})
	cred := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": token})
	cid := cred["id"].(string)
	if cred["last_used_at"] != nil {
		t.Fatalf("a new credential has last_used_at: %v", cred)
	}

	r, m := tsTest(t, env, sid, cid)
	tsMustConnected(t, r, m, "alpha", "beta")

	// Read-your-writes: no waiting.
	got := tsGetCredential(t, env, sid, cid)
	lastUsed, _ := got["last_used_at"].(string)
	at, err := time.Parse(time.RFC3339, lastUsed)
	if err != nil || !strings.HasSuffix(lastUsed, "Z") || time.Since(at) > time.Minute || time.Until(at) > time.Second {
		t.Fatalf("last_used_at %q is not a recent timestamp: %v", lastUsed, got)
	}
	if got["updated_at"] == nil {
		t.Fatalf("credential without updated_at: %v", got)
	}

	ev := tsMustUsedEvent(t, env, sid, cid, token, "Bearer "+token)
	wantHost := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/mcp")
	if ev.Data["operation"] != "test" || ev.Data["outcome"] != "connected" ||
		ev.Data["tool_count"] != float64(2) || ev.Data["target_host"] != wantHost {
		t.Fatalf("use event data %v, want operation test, outcome connected, tool_count 2, target_host %s", ev.Data, wantHost)
	}
	if _, ok := ev.Data["error_code"]; ok {
		t.Fatalf("a successful use carries an error_code: %v", ev.Data)
	}

	// last_used_at comes from the stream: a rebuilt read model shows it too.
	env.StopAPI()
	env.StopProjector()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(env.ReadModel + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	env.StartProjector()
	env.StartAPI()
	if again := tsGetCredential(t, env, sid, cid)["last_used_at"]; again != lastUsed {
		t.Fatalf("after a rebuild last_used_at is %v, want %q", again, lastUsed)
	}
}

func TestTestServerNotFoundAndInvalid(t *testing.T) {
	t.Parallel()
	env := vaulttest.MustStart(t, vaulttest.Options{AllowPrivate: true})
	rec := &tsRecorder{}
	url := tsServe(t, false, func(http.Header) bool { return true }, rec, "alpha")
	sid := tsCreateServer(t, env, url, nil)
	other := tsCreateServer(t, env, url, nil)
	otherCred := env.MustCreateCredential(t, "", other, map[string]any{"bearer_token": "other-server-token-0123"})["id"].(string)

	mustErr := func(t *testing.T, r vaulttest.Response, status int, param any) {
		t.Helper()
		if r.Status != status {
			t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
		}
		e, ok := r.JSON(t)["error"].(map[string]any)
		if !ok {
			t.Fatalf("no error object: %s", r.Body)
		}
		if param != nil && e["param"] != param {
			t.Fatalf("param %v, want %v: %s", e["param"], param, r.Body)
		}
	}
	post := func(path string, body any, key string) vaulttest.Response {
		return env.Do(t, vaulttest.Request{Method: "POST", Path: path, Body: body, Key: key})
	}
	cases := []struct {
		name   string
		path   string
		body   any
		key    string
		status int
		param  any
	}{
		{"unknown credential", "/servers/" + sid + "/test", map[string]any{"credential_id": "mcp_cred_0123456789abcdef0123456789abcdef"}, "", 404, nil},
		{"credential of another server", "/servers/" + sid + "/test", map[string]any{"credential_id": otherCred}, "", 404, nil},
		{"malformed credential_id", "/servers/" + sid + "/test", map[string]any{"credential_id": "cred-123"}, "", 400, "credential_id"},
		{"credential_id wrong type", "/servers/" + sid + "/test", map[string]any{"credential_id": 42}, "", 400, "credential_id"},
		{"unknown field", "/servers/" + sid + "/test", map[string]any{"credentialid": "x"}, "", 400, nil},
		{"unknown server", "/servers/mcp_srv_0123456789abcdef0123456789abcdef/test", nil, "", 404, nil},
		{"malformed server id", "/servers/nope/test", nil, "", 404, nil},
		{"other account's server", "/servers/" + sid + "/test", nil, vaulttest.KeyB, 404, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mustErr(t, post(tc.path, tc.body, tc.key), tc.status, tc.param)
		})
	}
	if n := len(rec.all()); n != 0 {
		t.Fatalf("refused calls reached the MCP server %d times", n)
	}
	// An empty object is accepted like no body.
	if r := post("/servers/"+sid+"/test", map[string]any{}, ""); r.Status != http.StatusOK || r.JSON(t)["connected"] != true {
		t.Fatalf("test with {}: %d %s", r.Status, r.Body)
	}
}
