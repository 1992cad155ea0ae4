package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ---- test fixtures ----------------------------------------------------------

// seenRequest is what the credential middleware observed for one request.
type seenRequest struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	RPC    string // JSON-RPC method of a POST body, if any
}

// recorder collects requests seen by a test server.
type recorder struct {
	mu   sync.Mutex
	reqs []seenRequest
}

func (r *recorder) add(s seenRequest) {
	r.mu.Lock()
	r.reqs = append(r.reqs, s)
	r.mu.Unlock()
}

func (r *recorder) all() []seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func (r *recorder) countRPC(method string) int {
	n := 0
	for _, s := range r.all() {
		if s.RPC == method {
			n++
		}
	}
	return n
}

// expectedHeaders is the exact set of credential headers a request must carry.
func expectedHeaders(a Auth) map[string]string {
	switch a.Type {
	case AuthBearer:
		return map[string]string{"Authorization": "Bearer " + a.BearerToken}
	case AuthAuthorization:
		return map[string]string{"Authorization": a.Authorization}
	case AuthHeaders:
		m := map[string]string{}
		for k, v := range a.Headers {
			m[http.CanonicalHeaderKey(k)] = v
		}
		return m
	}
	return map[string]string{}
}

// credentialMiddleware records every request and answers 401 unless it
// carries exactly the credential want.
func credentialMiddleware(want Auth, rec *recorder, next http.Handler) http.Handler {
	expected := expectedHeaders(want)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := seenRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone()}
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
		for k, v := range expected {
			if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

type noArgs struct{}

// MustMCPServer builds an in-process MCP server with the given tools.
func MustMCPServer(tb testing.TB, pageSize int, description string, tools ...string) *mcp.Server {
	tb.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "fixture", Version: "1.0.0"}, &mcp.ServerOptions{PageSize: pageSize})
	for _, name := range tools {
		mcp.AddTool(s, &mcp.Tool{Name: name, Description: description},
			func(context.Context, *mcp.CallToolRequest, noArgs) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{}, nil, nil
			})
	}
	return s
}

type transportKind string

const (
	kindStreamable transportKind = "streamable"
	kindSSE        transportKind = "sse"
)

// MustServe serves s over the given transport behind the credential
// middleware on a loopback httptest server, and returns the MCP URL.
func MustServe(tb testing.TB, kind transportKind, s *mcp.Server, want Auth, rec *recorder) string {
	tb.Helper()
	var h http.Handler
	switch kind {
	case kindStreamable:
		h = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	case kindSSE:
		h = mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s }, nil)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", credentialMiddleware(want, rec, h))
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// MustNoSecret fails when any secret appears anywhere in the JSON of res.
func MustNoSecret(tb testing.TB, res Result, secrets ...string) {
	tb.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range secrets {
		if s != "" && bytes.Contains(b, []byte(s)) {
			tb.Fatalf("secret %q leaked into result %s", s, b)
		}
	}
}

func MustCode(tb testing.TB, res Result, code string) {
	tb.Helper()
	if res.Connected || res.Error == nil || res.Error.Code != code {
		tb.Fatalf("want failure %q, got %+v (error %+v)", code, res, res.Error)
	}
	if res.ToolNames == nil || len(res.ToolNames) != 0 {
		tb.Fatalf("failed result must have empty non-nil ToolNames, got %#v", res.ToolNames)
	}
	if res.Error.Message == "" {
		tb.Fatal("empty error message")
	}
}

func MustConnected(tb testing.TB, res Result, want ...string) {
	tb.Helper()
	if !res.Connected || res.Error != nil {
		tb.Fatalf("want connected, got %+v (error %+v)", res, res.Error)
	}
	got := slices.Clone(res.ToolNames)
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		tb.Fatalf("tools: got %q, want %q", got, want)
	}
}

func localTester() *Tester {
	return &Tester{AllowPrivate: true, Timeout: 5 * time.Second}
}

var authCases = []struct {
	name string
	auth Auth
}{
	{"bearer", Auth{Type: AuthBearer, BearerToken: "tok-bearer-123"}},
	{"authorization", Auth{Type: AuthAuthorization, Authorization: "Token raw-value-456"}},
	{"headers", Auth{Type: AuthHeaders, Headers: map[string]string{"X-Api-Key": "key-789", "x-tenant": "acme"}}},
	{"none", Auth{Type: AuthNone}},
}

// ---- positive paths ---------------------------------------------------------

func TestAuthTypesBothTransports(t *testing.T) {
	for _, kind := range []transportKind{kindStreamable, kindSSE} {
		for _, tc := range authCases {
			t.Run(string(kind)+"/"+tc.name, func(t *testing.T) {
				rec := &recorder{}
				u := MustServe(t, kind, MustMCPServer(t, 0, "d", "alpha", "beta", "gamma"), tc.auth, rec)
				tester := localTester()
				tester.UserAgent = "vault-test/1"
				res := tester.Test(t.Context(), u, tc.auth, nil)
				MustConnected(t, res, "alpha", "beta", "gamma")
				if want := tc.auth.Type != AuthNone; res.CredentialSent != want {
					t.Fatalf("CredentialSent = %v, want %v", res.CredentialSent, want)
				}
				if res.TargetHost != strings.TrimPrefix(strings.TrimSuffix(u, "/mcp"), "http://") {
					t.Fatalf("TargetHost = %q", res.TargetHost)
				}
				reqs := rec.all()
				if len(reqs) == 0 {
					t.Fatal("server saw no requests")
				}
				expected := expectedHeaders(tc.auth)
				for i, r := range reqs {
					for k, v := range expected {
						if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
							t.Fatalf("request %d (%s %s %s): header %s = %q, want exactly %q", i, r.Method, r.Path, r.RPC, k, got, v)
						}
					}
					if _, ok := expected["Authorization"]; !ok && len(r.Header.Values("Authorization")) != 0 {
						t.Fatalf("request %d carries an Authorization header it should not", i)
					}
					if ua := r.Header.Get("User-Agent"); ua != "vault-test/1" {
						t.Fatalf("request %d: User-Agent %q", i, ua)
					}
				}
				wantInits := 1
				if kind == kindSSE {
					wantInits = 2 // the refused Streamable attempt, then the SSE session
				}
				if rec.countRPC("initialize") != wantInits || rec.countRPC("tools/list") != 1 {
					t.Fatalf("want one initialize and one tools/list, got %+v", reqs)
				}
				if kind == kindSSE {
					// The Streamable attempt came first and failed, then the
					// SSE GET, then POSTs to the announced endpoint.
					if reqs[0].Method != http.MethodPost || reqs[0].Query != "" {
						t.Fatalf("first request should be the Streamable POST, got %+v", reqs[0])
					}
					var gets, sessionPosts int
					for _, r := range reqs[1:] {
						switch {
						case r.Method == http.MethodGet:
							gets++
						case r.Method == http.MethodPost && strings.HasPrefix(r.Query, "sessionid="):
							sessionPosts++
						}
					}
					if gets != 1 || sessionPosts < 3 { // initialize, initialized, tools/list
						t.Fatalf("SSE fallback: %d GETs, %d session POSTs; requests %+v", gets, sessionPosts, reqs)
					}
				}
			})
		}
	}
}

func TestAllowedToolsFilter(t *testing.T) {
	rec := &recorder{}
	auth := Auth{Type: AuthBearer, BearerToken: "t"}
	u := MustServe(t, kindStreamable, MustMCPServer(t, 0, "d", "a", "b", "c"), auth, rec)
	tester := localTester()

	MustConnected(t, tester.Test(t.Context(), u, auth, nil), "a", "b", "c")
	MustConnected(t, tester.Test(t.Context(), u, auth, []string{"b", "zzz", "c"}), "b", "c")
	res := tester.Test(t.Context(), u, auth, []string{})
	MustConnected(t, res)
	if res.ToolNames == nil {
		t.Fatal("ToolNames must be an empty slice, not nil")
	}
}

func TestPaginationSDKServer(t *testing.T) {
	for _, kind := range []transportKind{kindStreamable, kindSSE} {
		t.Run(string(kind), func(t *testing.T) {
			rec := &recorder{}
			auth := Auth{Type: AuthBearer, BearerToken: "t"}
			u := MustServe(t, kind, MustMCPServer(t, 2, "d", "t1", "t2", "t3", "t4", "t5"), auth, rec)
			res := localTester().Test(t.Context(), u, auth, []string{"t1", "t3", "t5"})
			MustConnected(t, res, "t1", "t3", "t5")
			if n := rec.countRPC("tools/list"); n != 3 {
				t.Fatalf("tools/list calls = %d, want 3 pages", n)
			}
		})
	}
}

// MustHandWrittenServer is a minimal sessionless Streamable HTTP MCP server
// whose tools/list returns one tool per page. pages < 0 never ends; when
// repeat is set the cursor never changes.
func MustHandWrittenServer(tb testing.TB, pages int, repeat bool) (string, *atomic.Int32) {
	tb.Helper()
	var listCalls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Cursor string `json:"cursor"`
			} `json:"params"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		if len(req.ID) == 0 {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		var result any
		switch req.Method {
		case "initialize":
			result = map[string]any{
				"protocolVersion": "2025-06-18",
				"capabilities":    map[string]any{"tools": map[string]any{}},
				"serverInfo":      map[string]any{"name": "hand", "version": "1"},
			}
		case "tools/list":
			listCalls.Add(1)
			n := 0
			if req.Params.Cursor != "" {
				n, _ = strconv.Atoi(req.Params.Cursor)
			}
			page := map[string]any{"tools": []any{map[string]any{
				"name":        fmt.Sprintf("tool-%03d", n),
				"inputSchema": map[string]any{"type": "object"},
			}}}
			switch {
			case repeat:
				page["nextCursor"] = "1"
			case pages < 0 || n+1 < pages:
				page["nextCursor"] = strconv.Itoa(n + 1)
			}
			result = page
		default:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID,
				"error": map[string]any{"code": -32601, "message": "method not found"}})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
	}))
	tb.Cleanup(srv.Close)
	return srv.URL, &listCalls
}

func TestPaginationHandWrittenServer(t *testing.T) {
	t.Run("four pages", func(t *testing.T) {
		u, calls := MustHandWrittenServer(t, 4, false)
		res := localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil)
		MustConnected(t, res, "tool-000", "tool-001", "tool-002", "tool-003")
		if calls.Load() != 4 {
			t.Fatalf("tools/list calls = %d", calls.Load())
		}
	})
	t.Run("endless pages are refused", func(t *testing.T) {
		u, calls := MustHandWrittenServer(t, -1, false)
		res := localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil)
		MustCode(t, res, CodeResponseTooLarge)
		if calls.Load() != maxToolPages {
			t.Fatalf("tools/list calls = %d, want %d", calls.Load(), maxToolPages)
		}
	})
	t.Run("repeated cursor stops", func(t *testing.T) {
		u, calls := MustHandWrittenServer(t, -1, true)
		res := localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil)
		MustConnected(t, res, "tool-000", "tool-001")
		if calls.Load() != 2 {
			t.Fatalf("tools/list calls = %d, want 2", calls.Load())
		}
	})
}

func TestSameOriginRedirectFollowed(t *testing.T) {
	rec := &recorder{}
	auth := Auth{Type: AuthBearer, BearerToken: "redirect-token"}
	s := MustMCPServer(t, 0, "d", "x")
	mux := http.NewServeMux()
	mux.Handle("/mcp", credentialMiddleware(auth, rec, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)))
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/mcp", http.StatusPermanentRedirect)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	MustConnected(t, localTester().Test(t.Context(), srv.URL+"/old", auth, nil), "x")
}

func TestTLSServer(t *testing.T) {
	rec := &recorder{}
	auth := Auth{Type: AuthBearer, BearerToken: "tls-token"}
	s := MustMCPServer(t, 0, "d", "secure")
	srv := MustTLSServer(t, credentialMiddleware(auth, rec, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)))

	t.Run("trusted", func(t *testing.T) {
		tester := localTester()
		tester.tlsConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
		MustConnected(t, tester.Test(t.Context(), srv.URL, auth, nil), "secure")
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		res := localTester().Test(t.Context(), srv.URL, auth, nil)
		MustCode(t, res, CodeTLSError)
		MustNoSecret(t, res, auth.BearerToken)
	})
}

// ---- credential failures and secrecy ---------------------------------------

func TestWrongCredentialRejected(t *testing.T) {
	right := Auth{Type: AuthBearer, BearerToken: "the-right-token"}
	wrongs := []Auth{
		{Type: AuthBearer, BearerToken: "SECRET-wrong-bearer-Zq81"},
		{Type: AuthAuthorization, Authorization: "Basic SECRET-wrong-raw-Yw72"},
		{Type: AuthHeaders, Headers: map[string]string{"X-Api-Key": "SECRET-wrong-header-Xv63"}},
		{Type: AuthNone},
	}
	for _, kind := range []transportKind{kindStreamable, kindSSE} {
		rec := &recorder{}
		u := MustServe(t, kind, MustMCPServer(t, 0, "d", "a"), right, rec)
		// Secrets in the URL's userinfo and query must not leak either.
		u = strings.Replace(u, "http://", "http://alice:SECRET-userinfo-Pw55@", 1) + "?api_key=SECRET-query-Qk44"
		for _, wrong := range wrongs {
			t.Run(string(kind)+"/"+wrong.Type, func(t *testing.T) {
				res := localTester().Test(t.Context(), u, wrong, nil)
				MustCode(t, res, CodeCredentialRejected)
				MustNoSecret(t, res, "SECRET", "alice", "api_key", right.BearerToken)
				if strings.Contains(res.TargetHost, "@") || strings.Contains(res.TargetHost, "?") {
					t.Fatalf("TargetHost %q has userinfo or query", res.TargetHost)
				}
				if want := wrong.Type != AuthNone; res.CredentialSent != want {
					t.Fatalf("CredentialSent = %v, want %v", res.CredentialSent, want)
				}
			})
		}
		for _, r := range rec.all() {
			if strings.HasPrefix(r.Header.Get("Authorization"), "Basic YWxp") {
				t.Fatal("URL userinfo was sent as Basic auth")
			}
		}
	}
}

func TestInvalidCredential(t *testing.T) {
	for _, a := range []Auth{
		{Type: "kerberos"},
		{Type: AuthBearer},
		{Type: AuthBearer, BearerToken: "SECRET-a\r\nX-Injected: 1"},
		{Type: AuthHeaders},
		{Type: AuthHeaders, Headers: map[string]string{"Host": "SECRET-evil"}},
		{Type: AuthHeaders, Headers: map[string]string{"Bad Name": "SECRET-v"}},
		{Type: AuthHeaders, Headers: map[string]string{"X-Ok": "SECRET-\n"}},
		// Headers the MCP transport owns would replace the client's own.
		{Type: AuthHeaders, Headers: map[string]string{"Content-Type": "SECRET-text/plain"}},
		{Type: AuthHeaders, Headers: map[string]string{"accept": "SECRET-*/*"}},
		{Type: AuthHeaders, Headers: map[string]string{"Mcp-Session-Id": "SECRET-s"}},
		{Type: AuthHeaders, Headers: map[string]string{"MCP-Protocol-Version": "SECRET-2020-01-01"}},
		{Type: AuthHeaders, Headers: map[string]string{"Last-Event-ID": "SECRET-1"}},
	} {
		res := localTester().Test(t.Context(), "http://127.0.0.1:1/mcp", a, nil)
		MustCode(t, res, CodeInvalidCredential)
		MustNoSecret(t, res, "SECRET")
		if res.CredentialSent {
			t.Fatal("nothing may be sent for an invalid credential")
		}
	}
}

func TestInvalidURL(t *testing.T) {
	for _, u := range []string{
		"", "not a url", "ftp://example.com/", "http://", "http:///path", "mailto:someone@example.com",
		"http://example.com:99999/", "http://example.com:0/", "http://1.2.3.4.5/", "http://256.0.0.1/",
		"http://0x100000000/", "http://user:SECRET-pw@%zz/",
	} {
		res := (&Tester{}).Test(t.Context(), u, Auth{Type: AuthBearer, BearerToken: "SECRET-tok"}, nil)
		MustCode(t, res, CodeInvalidURL)
		MustNoSecret(t, res, "SECRET")
	}
}

// ---- transport failures -----------------------------------------------------

func TestNotMCPServer(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"404": http.NotFound,
		"html": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html>hello</html>")
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			auth := Auth{Type: AuthBearer, BearerToken: "SECRET-nm"}
			res := localTester().Test(t.Context(), srv.URL, auth, nil)
			MustCode(t, res, CodeNotMCPServer)
			MustNoSecret(t, res, "SECRET")
		})
	}
	t.Run("503", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		MustCode(t, localTester().Test(t.Context(), srv.URL, Auth{}, nil), CodeUpstreamError)
	})
}

func TestUnreachable(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		res := localTester().Test(t.Context(), "http://"+addr+"/mcp", Auth{Type: AuthBearer, BearerToken: "SECRET-x"}, nil)
		MustCode(t, res, CodeUnreachable)
		MustNoSecret(t, res, "SECRET")
		if res.CredentialSent {
			t.Fatal("no connection was made, so the credential was not sent")
		}
	})
	t.Run("dns failure", func(t *testing.T) {
		tester := &Tester{Timeout: 5 * time.Second}
		tester.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		tester.dial = mustNotDial(t)
		res := tester.Test(t.Context(), "https://does-not-exist.invalid/mcp", Auth{}, nil)
		MustCode(t, res, CodeUnreachable)
	})
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never answers while the test runs
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close

	tester := &Tester{AllowPrivate: true, Timeout: time.Second}
	start := time.Now()
	res := tester.Test(t.Context(), srv.URL, Auth{Type: AuthBearer, BearerToken: "SECRET-slow"}, nil)
	elapsed := time.Since(start)
	MustCode(t, res, CodeTimeout)
	MustNoSecret(t, res, "SECRET")
	if elapsed >= 3*time.Second {
		t.Fatalf("test took %s, want < 3s", elapsed)
	}
	if !res.CredentialSent {
		t.Fatal("a connection was made, so the credential counts as sent")
	}
}

func TestResponseTooLarge(t *testing.T) {
	auth := Auth{Type: AuthBearer, BearerToken: "SECRET-big"}
	rec := &recorder{}
	u := MustServe(t, kindStreamable, MustMCPServer(t, 0, strings.Repeat("x", 8<<10), "huge"), auth, rec)
	tester := localTester()
	tester.MaxResponseBytes = 2 << 10
	res := tester.Test(t.Context(), u, auth, nil)
	MustCode(t, res, CodeResponseTooLarge)
	MustNoSecret(t, res, "SECRET")
	// The same server works with the default cap.
	MustConnected(t, localTester().Test(t.Context(), u, auth, nil), "huge")
}

// ---- origin, redirect and transport-security rules --------------------------

// MustHitCounter starts a loopback server that only counts requests.
func MustHitCounter(tb testing.TB, tls bool) (*httptest.Server, *atomic.Int32) {
	tb.Helper()
	var hits atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusOK)
	})
	if tls {
		return MustTLSServer(tb, h), &hits
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv, &hits
}

func TestRedirectToOtherHostNotFollowed(t *testing.T) {
	other, hits := MustHitCounter(t, false)
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+"/mcp", code)
		}))
		t.Cleanup(srv.Close)
		res := localTester().Test(t.Context(), srv.URL+"/mcp", Auth{Type: AuthBearer, BearerToken: "SECRET-r"}, nil)
		MustCode(t, res, CodeRedirectBlocked)
		MustNoSecret(t, res, "SECRET")
	}
	if hits.Load() != 0 {
		t.Fatalf("redirect target was hit %d times", hits.Load())
	}
}

func TestTooManyRedirects(t *testing.T) {
	var hops atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hops.Add(1)
		http.Redirect(w, r, fmt.Sprintf("/hop%d", n), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	res := localTester().Test(t.Context(), srv.URL, Auth{}, nil)
	MustCode(t, res, CodeRedirectBlocked)
	// Streamable and SSE attempts are both refused before a 5th request.
	if hops.Load() > 2*(maxRedirects+1) {
		t.Fatalf("followed %d hops", hops.Load())
	}
}

func TestHTTPSNeverDowngraded(t *testing.T) {
	plain, hits := MustHitCounter(t, false)
	srv := MustTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/mcp", http.StatusTemporaryRedirect)
	}))
	tester := localTester()
	tester.tlsConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	res := tester.Test(t.Context(), srv.URL+"/mcp", Auth{Type: AuthBearer, BearerToken: "SECRET-d"}, nil)
	MustCode(t, res, CodeInsecureTransport)
	MustNoSecret(t, res, "SECRET")
	if hits.Load() != 0 {
		t.Fatalf("plain http target was hit %d times", hits.Load())
	}
}

// MustLegacySSEServer serves a hand-written HTTP+SSE endpoint that announces
// endpoint as its message endpoint and refuses Streamable POSTs.
func MustLegacySSEServer(tb testing.TB, endpoint string, rec *recorder, tls bool) *httptest.Server {
	tb.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.add(seenRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()})
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: endpoint\ndata: %s\n\n", endpoint)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	if tls {
		return MustTLSServer(tb, h)
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

// MustTLSServer starts a loopback TLS server whose handshake-failure logs
// (expected in the untrusted-certificate test) are discarded.
func MustTLSServer(tb testing.TB, h http.Handler) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	return srv
}

func TestSSEEndpointOnOtherOriginRefused(t *testing.T) {
	other, hits := MustHitCounter(t, false)
	rec := &recorder{}
	srv := MustLegacySSEServer(t, other.URL+"/messages?sessionid=1", rec, false)
	auth := Auth{Type: AuthBearer, BearerToken: "SECRET-sse"}
	res := localTester().Test(t.Context(), srv.URL+"/sse", auth, nil)
	MustCode(t, res, CodeDestinationBlocked)
	MustNoSecret(t, res, "SECRET")
	if hits.Load() != 0 {
		t.Fatalf("other origin was hit %d times", hits.Load())
	}
	// The origin itself saw the credential on the POST and on the SSE GET.
	var sawGet bool
	for _, r := range rec.all() {
		if r.Header.Get("Authorization") != "Bearer "+auth.BearerToken {
			t.Fatalf("%s without credential", r.Method)
		}
		sawGet = sawGet || r.Method == http.MethodGet
	}
	if !sawGet {
		t.Fatal("SSE GET was never made")
	}
}

func TestSSEEndpointDowngradeRefused(t *testing.T) {
	plain, hits := MustHitCounter(t, false)
	rec := &recorder{}
	srv := MustLegacySSEServer(t, plain.URL+"/messages", rec, true)
	tester := localTester()
	tester.tlsConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	res := tester.Test(t.Context(), srv.URL+"/sse", Auth{Type: AuthBearer, BearerToken: "SECRET-sse"}, nil)
	MustCode(t, res, CodeInsecureTransport)
	if hits.Load() != 0 {
		t.Fatalf("plain http endpoint was hit %d times", hits.Load())
	}
}

// ---- SSRF guard ------------------------------------------------------------

// countingListener counts TCP connections accepted on a loopback port.
type countingListener struct {
	ln       net.Listener
	accepted chan string // remote address of each accepted connection
}

func MustCountingListener(tb testing.TB) *countingListener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cl := &countingListener{ln: ln, accepted: make(chan string, 1024)}
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

func (cl *countingListener) port() string {
	_, p, _ := net.SplitHostPort(cl.ln.Addr().String())
	return p
}

// MustAcceptedBeforeSentinel connects once more and returns how many
// connections the listener accepted before that one. Accept order follows
// connection order, so no waiting or polling is needed.
func (cl *countingListener) MustAcceptedBeforeSentinel(tb testing.TB) int {
	tb.Helper()
	c, err := net.Dial("tcp", cl.ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	sentinel := c.LocalAddr().String()
	n := 0
	timeout := time.After(10 * time.Second) // a safety net, not a wait
	for {
		select {
		case addr := <-cl.accepted:
			if addr == sentinel {
				return n
			}
			n++
		case <-timeout:
			tb.Fatal("sentinel connection was never accepted")
		}
	}
}

// mustNotDial is a dial hook that fails the test on any dial that is not
// loopback, and otherwise performs the real dial (so counting listeners see it).
func mustNotDial(tb testing.TB) dialFunc {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !ap.Addr().Unmap().IsLoopback() {
			tb.Errorf("dial attempted to %s", address)
			return nil, errors.New("test refused a non-loopback dial")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
}

func TestBlockedDestinations(t *testing.T) {
	cl := MustCountingListener(t)
	port := cl.port()
	hosts := map[string][]netip.Addr{
		"loopback.test": {netip.MustParseAddr("127.0.0.1")},
		"private.test":  {netip.MustParseAddr("10.0.0.1")},
		"metadata.test": {netip.MustParseAddr("169.254.169.254")},
		"imds6.test":    {netip.MustParseAddr("fd00:ec2::254")},
		"mapped.test":   {netip.MustParseAddr("::ffff:127.0.0.1")},
		"mixed.test":    {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("127.0.0.1")},
		"cgnat.test":    {netip.MustParseAddr("100.64.1.1")},
	}
	var lookups atomic.Int32
	tester := &Tester{Timeout: 5 * time.Second}
	tester.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		lookups.Add(1)
		if a, ok := hosts[host]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	tester.dial = mustNotDial(t)

	urls := []string{
		"http://127.0.0.1:" + port + "/mcp",
		"http://2130706433:" + port + "/mcp",
		"http://0177.0.0.1:" + port + "/mcp",
		"http://0x7f.0.0.1:" + port + "/mcp",
		"http://0x7f000001:" + port + "/mcp",
		"http://017700000001:" + port + "/mcp",
		"http://127.1:" + port + "/mcp",
		"http://127.0.0.1.:" + port + "/mcp",
		"http://0.0.0.0:" + port + "/mcp",
		"http://0:" + port + "/mcp",
		"http://[::1]:" + port + "/mcp",
		"http://[::]:" + port + "/mcp",
		"http://[::ffff:127.0.0.1]:" + port + "/mcp",
		"http://[::ffff:7f00:1]:" + port + "/mcp",
		"http://10.0.0.1/mcp",
		"http://172.16.5.4/mcp",
		"http://192.168.1.1/mcp",
		"http://169.254.169.254/latest/meta-data/",
		"http://[::ffff:169.254.169.254]/",
		"http://[64:ff9b::a9fe:a9fe]/",
		"http://[fd00:ec2::254]/",
		"http://100.100.100.200/",
		"http://100.64.0.1/",
		"http://[fe80::1%25eth0]/",
		"http://224.0.0.1/",
		"http://255.255.255.255/",
		"https://loopback.test:" + port + "/mcp",
		"http://loopback.test:" + port + "/mcp",
		"http://private.test/mcp",
		"http://metadata.test/mcp",
		"http://imds6.test/mcp",
		"http://mapped.test:" + port + "/mcp",
		"http://mixed.test:" + port + "/mcp",
		"http://cgnat.test/mcp",
	}
	auth := Auth{Type: AuthBearer, BearerToken: "SECRET-ssrf"}
	for _, u := range urls {
		res := tester.Test(t.Context(), u, auth, nil)
		if res.Error == nil || res.Error.Code != CodeDestinationBlocked {
			t.Errorf("%s: want destination_blocked, got %+v", u, res.Error)
			continue
		}
		MustNoSecret(t, res, "SECRET")
		if res.CredentialSent {
			t.Errorf("%s: CredentialSent must be false", u)
		}
	}
	if lookups.Load() == 0 {
		t.Fatal("the resolver hook was never used")
	}
	if n := cl.MustAcceptedBeforeSentinel(t); n != 0 {
		t.Fatalf("%d connections reached the listener", n)
	}
}

func TestDialerControlRechecksSocketAddress(t *testing.T) {
	cl := MustCountingListener(t)
	g := newGuard(false, time.Second, nil, nil)
	// Bypass resolution and dial the loopback socket address directly: the
	// socket-level Control hook must still refuse it.
	for _, addr := range []string{"127.0.0.1:" + cl.port(), "[::ffff:127.0.0.1]:" + cl.port()} {
		_, err := g.dial(t.Context(), "tcp", addr)
		var be *blockedError
		if !errors.As(err, &be) {
			t.Fatalf("%s: want blockedError, got %v", addr, err)
		}
	}
	if n := cl.MustAcceptedBeforeSentinel(t); n != 0 {
		t.Fatalf("%d connections reached the listener", n)
	}
}

func TestAllowPrivateReachesLoopbackByName(t *testing.T) {
	// With AllowPrivate the same guard lets a resolved loopback name through.
	auth := Auth{Type: AuthNone}
	u, _ := MustHandWrittenServer(t, 1, false)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	tester := localTester()
	tester.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	tester.dial = mustNotDial(t)
	MustConnected(t, tester.Test(t.Context(), "http://mcp.test:"+port+"/", auth, nil), "tool-000")
}

func TestBlockedReason(t *testing.T) {
	blocked := []string{
		"127.0.0.1", "127.255.255.254", "::1", "0.0.0.0", "::", "10.1.2.3", "172.31.255.255", "192.168.0.1",
		"fc00::1", "fd12:3456::1", "169.254.1.1", "fe80::1", "100.64.0.0", "100.127.255.255",
		"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "224.0.0.251", "ff02::1", "255.255.255.255",
		"::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0", "64:ff9b::7f00:1", "2002:7f00:1::",
		"::127.0.0.1", "240.0.0.1",
	}
	public := []string{"8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "100.63.255.255", "172.32.0.1", "64:ff9b::808:808"}
	for _, s := range blocked {
		if blockedReason(netip.MustParseAddr(s)) == "" {
			t.Errorf("%s should be blocked", s)
		}
	}
	for _, s := range public {
		if r := blockedReason(netip.MustParseAddr(s)); r != "" {
			t.Errorf("%s should be public, got %q", s, r)
		}
	}
}

func TestParseHostAddr(t *testing.T) {
	cases := []struct {
		host string
		want string // "" = a host name; "err" = invalid numeric host
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.0.0.1", "127.0.0.1"},
		{"0X7F.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"127.0.0.1.", "127.0.0.1"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"::1", "::1"},
		{"example.com", ""},
		{"1.2.3.example", ""},
		{"localhost", ""},
		{"1.2.3.4.5", "err"},
		{"256.0.0.1", "err"},
		{"4294967296", "err"},
		{"09.0.0.1", "err"},
		{"foo.09", "err"},
		{"1..1", "err"},
	}
	for _, c := range cases {
		addr, isIP, err := parseHostAddr(c.host)
		switch c.want {
		case "":
			if isIP || err != nil {
				t.Errorf("%s: want host name, got %v %v %v", c.host, addr, isIP, err)
			}
		case "err":
			if !isIP || err == nil {
				t.Errorf("%s: want invalid numeric host, got %v %v %v", c.host, addr, isIP, err)
			}
		default:
			if !isIP || err != nil || addr != netip.MustParseAddr(c.want) {
				t.Errorf("%s: want %s, got %v %v %v", c.host, c.want, addr, isIP, err)
			}
		}
	}
}
