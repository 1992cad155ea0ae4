package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/mcpproxy"
)

// ---- fixtures: upstream MCP servers built on the go-sdk ---------------------

// pxUpstream is an upstream MCP server (go-sdk) behind a recording,
// credential-checking middleware.
type pxUpstream struct {
	URL string
	Rec *tsRecorder
	Srv *mcp.Server
}

type pxEchoArgs struct {
	Text string `json:"text"`
}

// pxAddTool adds a tool answering "<name>:<text>".
func pxAddTool(s *mcp.Server, name, desc string) {
	mcp.AddTool(s, &mcp.Tool{Name: name, Description: desc},
		func(_ context.Context, _ *mcp.CallToolRequest, in pxEchoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + ":" + in.Text}}}, nil, nil
		})
}

// pxServe starts an upstream offering echo, whoami (answers the credential
// headers it received), slow (three progress notifications 200 ms apart,
// then "done") and the extra tools, over Streamable HTTP or HTTP+SSE.
func pxServe(tb testing.TB, sse bool, accept func(http.Header) bool, pageSize int, extra ...string) *pxUpstream {
	tb.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "px-upstream", Version: "1.0.0"}, &mcp.ServerOptions{PageSize: pageSize})
	pxAddTool(s, "echo", "echoes text")
	for _, name := range extra {
		pxAddTool(s, name, "extra tool "+name)
	}
	rec := &tsRecorder{}
	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Description: "shows the credential it got"},
		func(_ context.Context, req *mcp.CallToolRequest, _ tsNoArgs) (*mcp.CallToolResult, any, error) {
			// The headers of the newest request (HTTP+SSE handlers have no
			// per-message headers).
			var parts []string
			all := rec.all()
			last := all[len(all)-1].Header
			for _, h := range tsCredHeaders {
				parts = append(parts, h+"="+last.Get(h))
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Join(parts, ";")}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "reports progress"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ tsNoArgs) (*mcp.CallToolResult, any, error) {
			tok := req.Params.GetProgressToken()
			for i := 1; i <= 3; i++ {
				if tok != nil {
					if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: tok, Progress: float64(i), Total: 3, Message: fmt.Sprintf("step %d", i)}); err != nil {
						return nil, nil, err
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
		})
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
	return &pxUpstream{URL: srv.URL + "/mcp", Rec: rec, Srv: s}
}

// ---- fixtures: the agent (go-sdk client) ------------------------------------

// pxAgentRT adds the vault's headers to every request of the agent and
// remembers the session ids the vault answered.
type pxAgentRT struct {
	key, user string
	extra     sync.Map // header -> value, changeable between calls
}

func (rt *pxAgentRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+rt.key)
	if rt.user != "" {
		r.Header.Set("X-On-Behalf-Of", rt.user)
	}
	rt.extra.Range(func(k, v any) bool {
		if v.(string) == "" {
			r.Header.Del(k.(string))
		} else {
			r.Header.Set(k.(string), v.(string))
		}
		return true
	})
	return http.DefaultTransport.RoundTrip(r)
}

// pxAgent is one agent session through the vault.
type pxAgent struct {
	CS       *mcp.ClientSession
	RT       *pxAgentRT
	progress chan *mcp.ProgressNotificationParams
}

func pxEndpoint(env *vaulttest.Env, serverID string) string {
	return env.URL + "/api/v1/llm/mcp/servers/" + serverID + "/mcp"
}

// pxConnect opens an agent session with the go-sdk client; headers are
// added to every request.
func pxConnect(tb testing.TB, env *vaulttest.Env, serverID, key, user string, headers map[string]string) (*pxAgent, error) {
	tb.Helper()
	a := &pxAgent{RT: &pxAgentRT{key: key, user: user}, progress: make(chan *mcp.ProgressNotificationParams, 16)}
	for k, v := range headers {
		a.RT.extra.Store(k, v)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "px-agent", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			a.progress <- r.Params
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: pxEndpoint(env, serverID),
		HTTPClient: &http.Client{Transport: a.RT}, MaxRetries: -1}, nil)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() { cs.Close() })
	a.CS = cs
	return a, nil
}

func pxMustConnect(tb testing.TB, env *vaulttest.Env, serverID string, headers map[string]string) *pxAgent {
	tb.Helper()
	a, err := pxConnect(tb, env, serverID, vaulttest.KeyA, "", headers)
	if err != nil {
		tb.Fatalf("agent connect through the vault: %v", err)
	}
	return a
}

func pxCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// pxCall calls a tool and returns its first text, or the JSON-RPC error.
func pxCall(tb testing.TB, a *pxAgent, name string, args map[string]any) (string, *jsonrpc.Error) {
	tb.Helper()
	res, err := a.CS.CallTool(pxCtx(tb), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		var rpc *jsonrpc.Error
		if errors.As(err, &rpc) {
			return "", rpc
		}
		tb.Fatalf("call %s: %v", name, err)
	}
	if len(res.Content) == 0 {
		return "", nil
	}
	return res.Content[0].(*mcp.TextContent).Text, nil
}

func pxMustCall(tb testing.TB, a *pxAgent, name string, args map[string]any) string {
	tb.Helper()
	text, rpc := pxCall(tb, a, name, args)
	if rpc != nil {
		tb.Fatalf("call %s refused: %d %s", name, rpc.Code, rpc.Message)
	}
	return text
}

func pxToolNames(tb testing.TB, a *pxAgent) []string {
	tb.Helper()
	var names []string
	for tool, err := range a.CS.Tools(pxCtx(tb), nil) {
		if err != nil {
			tb.Fatalf("tools/list: %v", err)
		}
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

// pxStart starts a vault that may reach loopback upstreams.
func pxStart(tb testing.TB, o mcpproxy.Options) *vaulttest.Env {
	return vaulttest.MustStart(tb, vaulttest.Options{AllowPrivate: true, MCP: o})
}

// pxNever is the server body field that turns approvals off.
var pxNever = map[string]any{"require_approval": "never"}

// pxUseEvents returns the mcp.credential.used events of a credential.
func pxUseEvents(tb testing.TB, env *vaulttest.Env, serverID, credID string) []events.CredentialUsed {
	tb.Helper()
	var out []events.CredentialUsed
	for _, r := range lcRecords(tb, env, events.CredentialUsedSubject(serverID, credID)) {
		if u, ok := r.Event.(events.CredentialUsed); ok {
			out = append(out, u)
		}
	}
	return out
}

// ---- tests ------------------------------------------------------------------

// An agent reaches the upstream through the vault with each auth type over
// both upstream transports: the upstream sees exactly the credential's
// headers on every request and never the agent's API key, and a secret the
// upstream echoes back never reaches the agent.
func TestProxyInjectsEachAuthType(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	cases := []struct {
		name    string
		body    map[string]any
		headers map[string]string
		secrets []string
	}{
		{"bearer", map[string]any{"auth_type": "bearer", "bearer_token": "px-bearer-secret-0001"},
			map[string]string{"Authorization": "Bearer px-bearer-secret-0001"}, []string{"px-bearer-secret-0001"}},
		{"authorization", map[string]any{"auth_type": "authorization", "authorization": "Token px-raw-secret-0002"},
			map[string]string{"Authorization": "Token px-raw-secret-0002"}, []string{"px-raw-secret-0002"}},
		{"headers", map[string]any{"auth_type": "headers", "headers": map[string]string{"X-Api-Key": "px-key-secret-0003", "X-Tenant": "tenant-px-0003"}},
			map[string]string{"X-Api-Key": "px-key-secret-0003", "X-Tenant": "tenant-px-0003"}, []string{"px-key-secret-0003", "tenant-px-0003"}},
	}
	for _, sse := range []bool{false, true} {
		for _, tc := range cases {
			name := tc.name + "/streamable"
			if sse {
				name = tc.name + "/sse"
			}
			t.Run(name, func(t *testing.T) {
				up := pxServe(t, sse, func(h http.Header) bool { return tsExactly(h, tc.headers) }, 0)
				sid := tsCreateServer(t, env, up.URL, pxNever)
				env.MustCreateCredential(t, "", sid, tc.body)
				a := pxMustConnect(t, env, sid, nil)
				if got := pxMustCall(t, a, "echo", map[string]any{"text": "hi"}); got != "echo:hi" {
					t.Fatalf("echo through the vault = %q", got)
				}
				who := pxMustCall(t, a, "whoami", nil)
				tsMustNoSecret(t, "a tool result relayed to the agent", []byte(who), tc.secrets...)
				if !strings.Contains(who, "[REDACTED]") {
					t.Fatalf("whoami relayed as %q: the upstream's echo of the credential was not redacted", who)
				}
				seen := up.Rec.all()
				if len(seen) == 0 {
					t.Fatal("the upstream saw no request")
				}
				for _, s := range seen {
					if !tsExactly(s.Header, tc.headers) {
						t.Fatalf("upstream %s %s (rpc %q) did not carry exactly the credential headers: %v", s.Method, s.Path, s.RPC, s.Header)
					}
					if strings.Contains(string(tsHeaderBytes(s.Header)), vaulttest.KeyA) {
						t.Fatal("the agent's API key reached the upstream")
					}
				}
			})
		}
	}
}

// tools/list answers only allowed_tools, page by page with the upstream's
// cursor; a call of another tool is refused and never reaches upstream.
func TestProxyAllowedTools(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := pxServe(t, false, func(http.Header) bool { return true }, 2, "t1", "t2", "t3", "t4")
	sid := tsCreateServer(t, env, up.URL, map[string]any{"require_approval": "never",
		"allowed_tools": []string{"echo", "t2", "t4", "slow"}})
	a := pxMustConnect(t, env, sid, nil)
	pages := 0
	cursor := ""
	var names []string
	for {
		res, err := a.CS.ListTools(pxCtx(t), &mcp.ListToolsParams{Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, tool := range res.Tools {
			names = append(names, tool.Name)
		}
		if res.NextCursor == "" {
			break
		}
		cursor = res.NextCursor
	}
	slices.Sort(names)
	if want := []string{"echo", "slow", "t2", "t4"}; !slices.Equal(names, want) {
		t.Fatalf("tools through the vault = %v, want %v", names, want)
	}
	if pages < 3 {
		t.Fatalf("%d pages: the upstream's pagination (2 per page, 7 tools) was not kept", pages)
	}
	before := up.Rec.countRPC("tools/call")
	_, rpc := pxCall(t, a, "t1", nil)
	if rpc == nil || rpc.Code != mcpproxy.CodeToolNotAllowed || !strings.Contains(rpc.Message, "allowed_tools") {
		t.Fatalf("call of a tool outside allowed_tools: %+v", rpc)
	}
	if n := up.Rec.countRPC("tools/call"); n != before {
		t.Fatalf("a refused call reached the upstream (%d tools/call)", n-before)
	}
	pxMustCall(t, a, "t2", map[string]any{"text": "x"})
	// A policy change applies to the open session at its next request.
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid, Body: map[string]any{"allowed_tools": []string{"echo"}}})
	if r.Status != http.StatusOK {
		t.Fatalf("update: %d %s", r.Status, r.Body)
	}
	if _, rpc := pxCall(t, a, "t2", nil); rpc == nil || rpc.Code != mcpproxy.CodeToolNotAllowed {
		t.Fatalf("t2 after it left allowed_tools: %+v", rpc)
	}
}

// A long-running tool's progress notifications reach the agent as they
// happen, before the result, over both upstream transports.
func TestProxyStreamsProgress(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	for _, sse := range []bool{false, true} {
		t.Run(fmt.Sprintf("sse=%v", sse), func(t *testing.T) {
			up := pxServe(t, sse, func(http.Header) bool { return true }, 0)
			sid := tsCreateServer(t, env, up.URL, pxNever)
			a := pxMustConnect(t, env, sid, nil)
			var arrivals []time.Time
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range 3 {
					select {
					case <-a.progress:
						arrivals = append(arrivals, time.Now())
					case <-time.After(10 * time.Second):
						return
					}
				}
			}()
			params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{}}
			params.SetProgressToken("px-progress-1")
			res, err := a.CS.CallTool(pxCtx(t), params)
			finished := time.Now()
			if err != nil {
				t.Fatal(err)
			}
			<-done
			if len(arrivals) != 3 {
				t.Fatalf("%d of 3 progress notifications reached the agent", len(arrivals))
			}
			if res.Content[0].(*mcp.TextContent).Text != "done" {
				t.Fatalf("result %v", res.Content)
			}
			// The first step is sent ~600 ms before the result: buffered
			// until the end, it would arrive with it.
			if gap := finished.Sub(arrivals[0]); gap < 300*time.Millisecond {
				t.Fatalf("first progress arrived only %s before the result: not streamed", gap)
			}
		})
	}
}

// require_approval "always" (the default) refuses a call until the owner
// issues an approval; an approval is single-use and bound to its tool and
// arguments; refused calls never reach the upstream.
func TestProxyApproval(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := pxServe(t, false, func(http.Header) bool { return true }, 0)
	sid := tsCreateServer(t, env, up.URL, nil) // require_approval defaults to "always"
	a := pxMustConnect(t, env, sid, nil)
	args := map[string]any{"text": "ship it"}

	_, rpc := pxCall(t, a, "echo", args)
	if rpc == nil || rpc.Code != mcpproxy.CodeApprovalRequired || !strings.Contains(rpc.Message, "approval_required") ||
		!strings.Contains(rpc.Message, "/servers/"+sid+"/approvals") {
		t.Fatalf("unapproved call: %+v", rpc)
	}
	var data map[string]any
	if err := json.Unmarshal(rpc.Data, &data); err != nil || data["tool_name"] != "echo" || data["arguments_sha256"] == "" {
		t.Fatalf("approval_required data %s (%v)", rpc.Data, err)
	}
	if n := up.Rec.countRPC("tools/call"); n != 0 {
		t.Fatalf("an unapproved call reached the upstream")
	}

	approve := func(body map[string]any, key, user string) vaulttest.Response {
		return env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/approvals", Body: body, Key: key, User: user})
	}
	r := approve(map[string]any{"tool_name": "echo", "arguments": args}, "", "")
	if r.Status != http.StatusCreated {
		t.Fatalf("approval: %d %s", r.Status, r.Body)
	}
	ap := r.JSON(t)
	id, _ := ap["id"].(string)
	if !strings.HasPrefix(id, "mcp_apr_") || ap["object"] != "mcp.approval" || ap["arguments_sha256"] != data["arguments_sha256"] {
		t.Fatalf("approval object %s (want arguments_sha256 %v)", r.Body, data["arguments_sha256"])
	}
	// Someone else cannot approve on this server.
	if r := approve(map[string]any{"tool_name": "echo"}, vaulttest.KeyB, ""); r.Status != http.StatusNotFound {
		t.Fatalf("approval on a foreign server: %d %s", r.Status, r.Body)
	}

	// Other arguments do not match (and do not consume it).
	a.RT.extra.Store(mcpproxy.HeaderApproval, id)
	if _, rpc := pxCall(t, a, "echo", map[string]any{"text": "rm -rf"}); rpc == nil || !strings.Contains(rpc.Message, "approval_invalid") {
		t.Fatalf("approval used with other arguments: %+v", rpc)
	}
	if got := pxMustCall(t, a, "echo", args); got != "echo:ship it" {
		t.Fatalf("approved call = %q", got)
	}
	// Single use.
	if _, rpc := pxCall(t, a, "echo", args); rpc == nil || !strings.Contains(rpc.Message, "approval_invalid") {
		t.Fatalf("approval used twice: %+v", rpc)
	}
	if n := up.Rec.countRPC("tools/call"); n != 1 {
		t.Fatalf("%d tools/call reached the upstream, want exactly the approved one", n)
	}
	// The approval may also travel in _meta, and without arguments it
	// approves any arguments of that tool.
	a.RT.extra.Store(mcpproxy.HeaderApproval, "")
	id2 := approve(map[string]any{"tool_name": "echo", "ttl_seconds": 60}, "", "").JSON(t)["id"].(string)
	p := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "any"}, Meta: mcp.Meta{mcpproxy.MetaApproval: id2}}
	if res, err := a.CS.CallTool(pxCtx(t), p); err != nil || res.Content[0].(*mcp.TextContent).Text != "echo:any" {
		t.Fatalf("call approved in _meta: %v %v", res, err)
	}
	// An approval for one tool does not approve another.
	id3 := approve(map[string]any{"tool_name": "whoami"}, "", "").JSON(t)["id"].(string)
	a.RT.extra.Store(mcpproxy.HeaderApproval, id3)
	if _, rpc := pxCall(t, a, "echo", args); rpc == nil || !strings.Contains(rpc.Message, "approval_invalid") {
		t.Fatalf("approval for another tool: %+v", rpc)
	}
	for _, bad := range []map[string]any{{}, {"tool_name": ""}, {"tool_name": "echo", "arguments": "x"}, {"tool_name": "echo", "ttl_seconds": 901}, {"tool_name": "echo", "extra": 1}} {
		if r := approve(bad, "", ""); r.Status != http.StatusBadRequest {
			t.Fatalf("approval body %v: %d %s", bad, r.Status, r.Body)
		}
	}
}

// A session belongs to its owner and its server: another owner, or the same
// session id on another server's endpoint, gets a 404; someone else's
// server is a 404 before any MCP exchange; DELETE ends the session.
func TestProxySessionIsolation(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := pxServe(t, false, func(http.Header) bool { return true }, 0)
	sid := tsCreateServer(t, env, up.URL, pxNever)
	other := tsCreateServer(t, env, up.URL, pxNever)
	a := pxMustConnect(t, env, sid, nil)
	sess := a.CS.ID()
	if sess == "" {
		t.Fatal("no Mcp-Session-Id")
	}
	list := `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`
	post := func(serverID, key, user, session string) vaulttest.Response {
		return env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + serverID + "/mcp", Body: list, Key: key, User: user,
			Header: map[string]string{"Mcp-Session-Id": session, "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-06-18"}})
	}
	if r := post(sid, "", "", sess); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "echo") {
		t.Fatalf("the owner's own request: %d %s", r.Status, r.Body)
	}
	for _, c := range []struct{ name, server, key, user string }{
		{"another account", sid, vaulttest.KeyB, ""},
		{"another end user", sid, "", "mallory"},
		{"another server", other, "", ""},
	} {
		r := post(c.server, c.key, c.user, sess)
		if r.Status != http.StatusNotFound || lcErrType(t, r) != "not_found_error" {
			t.Fatalf("%s with the session id: %d %s", c.name, r.Status, r.Body)
		}
	}
	// Someone else's server: 404 before any MCP exchange with the upstream.
	before := len(up.Rec.all())
	if _, err := pxConnect(t, env, sid, vaulttest.KeyB, "", nil); err == nil {
		t.Fatal("account B opened a session on account A's server")
	}
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/mcp", Key: vaulttest.KeyB,
		Body:   `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`,
		Header: map[string]string{"Accept": "application/json, text/event-stream"}})
	if r.Status != http.StatusNotFound || lcErrType(t, r) != "not_found_error" {
		t.Fatalf("initialize on a foreign server: %d %s", r.Status, r.Body)
	}
	if after := len(up.Rec.all()); after != before {
		t.Fatalf("a foreign initialize reached the upstream (%d requests)", after-before)
	}
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid + "/mcp", Key: "-"}); r.Status != http.StatusUnauthorized {
		t.Fatalf("no API key: %d", r.Status)
	}
	// DELETE by someone else is a 404 and leaves the session open.
	del := func(key string) vaulttest.Response {
		return env.Do(t, vaulttest.Request{Method: "DELETE", Path: "/servers/" + sid + "/mcp", Key: key, Header: map[string]string{"Mcp-Session-Id": sess}})
	}
	if r := del(vaulttest.KeyB); r.Status != http.StatusNotFound {
		t.Fatalf("foreign DELETE: %d %s", r.Status, r.Body)
	}
	pxMustCall(t, a, "echo", map[string]any{"text": "still open"})
	if r := del(""); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	vaulttest.Eventually(t, 5*time.Second, func() bool {
		r := post(sid, "", "", sess)
		return r.Status == http.StatusNotFound && strings.Contains(string(r.Body), "session_ended")
	})
}

// Revoking (or deleting) the session's credential takes effect at the
// session's next request: nothing more is sent upstream with it.
func TestProxyRevokeTakesEffect(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	want := map[string]string{"Authorization": "Bearer px-revoke-secret-01"}
	up := pxServe(t, false, func(h http.Header) bool { return tsExactly(h, want) }, 0)
	sid := tsCreateServer(t, env, up.URL, pxNever)
	cred := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "px-revoke-secret-01"})["id"].(string)
	a := pxMustConnect(t, env, sid, nil)
	pxMustCall(t, a, "echo", map[string]any{"text": "before"})
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/credentials/" + cred + "/revoke"})
	if r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	before := len(up.Rec.all())
	_, rpc := pxCall(t, a, "echo", map[string]any{"text": "after"})
	if rpc == nil || rpc.Code != mcpproxy.CodeCredentialUnusable || !strings.Contains(rpc.Message, "credential_revoked") {
		t.Fatalf("call after revoke: %+v", rpc)
	}
	if _, err := a.CS.ListTools(pxCtx(t), nil); err == nil {
		t.Fatal("tools/list after revoke succeeded")
	}
	if after := len(up.Rec.all()); after != before {
		t.Fatalf("%d requests reached the upstream after the revoke", after-before)
	}
	// A new session names the revoked credential: refused at initialize.
	if _, err := pxConnect(t, env, sid, vaulttest.KeyA, "", map[string]string{mcpproxy.HeaderCredential: cred}); err == nil ||
		!strings.Contains(err.Error(), "credential_revoked") {
		t.Fatalf("initialize with a revoked credential: %v", err)
	}
}

// Each tools/call is one mcp.credential.used event (tool, outcome, latency;
// no argument, no result); initialize and tools/list once per session;
// last_used_at follows within a second.
func TestProxyUseEvents(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := pxServe(t, false, func(http.Header) bool { return true }, 0)
	sid := tsCreateServer(t, env, up.URL, pxNever)
	cred := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "px-use-secret-0001"})["id"].(string)
	a := pxMustConnect(t, env, sid, nil)
	for range 3 {
		pxToolNames(t, a)
	}
	canary := "px-argument-canary-7f3a"
	start := time.Now()
	for i := range 5 {
		pxMustCall(t, a, "echo", map[string]any{"text": fmt.Sprintf("%s-%d", canary, i)})
	}
	vaulttest.Eventually(t, 5*time.Second, func() bool {
		c := tsGetCredential(t, env, sid, cred)
		return c["last_used_at"] != nil
	})
	if d := time.Since(start); d > 2*time.Second {
		t.Logf("last_used_at took %s", d)
	}
	var uses []events.CredentialUsed
	vaulttest.Eventually(t, 5*time.Second, func() bool {
		uses = pxUseEvents(t, env, sid, cred)
		return len(uses) >= 7
	})
	count := map[string]int{}
	for _, u := range uses {
		count[u.Operation]++
		if u.Operation == "tools/call" && (u.ToolName != "echo" || u.Outcome != "ok" || u.LatencyMS <= 0 || u.TargetHost == "") {
			t.Fatalf("tools/call event %+v", u)
		}
	}
	if count["initialize"] != 1 || count["tools/list"] != 1 || count["tools/call"] != 5 || len(uses) != 7 {
		t.Fatalf("use events by operation %v (want initialize 1, tools/list 1, tools/call 5)", count)
	}
	for _, r := range lcRecords(t, env, "vault."+sid+".>") {
		b, _ := json.Marshal(r.Event)
		tsMustNoSecret(t, "the stream", b, canary, "px-use-secret-0001")
	}
	// A refused call is not a use.
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid, Body: map[string]any{"allowed_tools": []string{"whoami"}}})
	if r.Status != http.StatusOK {
		t.Fatal(r.Status)
	}
	pxCall(t, a, "echo", nil)
	time.Sleep(200 * time.Millisecond)
	if n := len(pxUseEvents(t, env, sid, cred)); n != 7 {
		t.Fatalf("a refused call was recorded as a use (%d events)", n)
	}
}

// pxToolsEvents returns the mcp.server.tools_changed events of a server.
func pxToolsEvents(tb testing.TB, env *vaulttest.Env, serverID string) []events.ServerToolsChanged {
	tb.Helper()
	var out []events.ServerToolsChanged
	for _, r := range lcRecords(tb, env, events.ToolsSubject(serverID)) {
		if e, ok := r.Event.(events.ServerToolsChanged); ok {
			out = append(out, e)
		}
	}
	return out
}

// The vault records each tool's hash; when the upstream's inventory or a
// tool changes, one mcp.server.tools_changed names what changed and the
// server shows tools_changed_at. testServer and the endpoint both feed it.
func TestProxyToolDrift(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := pxServe(t, false, func(http.Header) bool { return true }, 0, "alpha", "beta")
	sid := tsCreateServer(t, env, up.URL, pxNever)
	server := func() map[string]any {
		r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid})
		if r.Status != http.StatusOK {
			t.Fatalf("get server: %d %s", r.Status, r.Body)
		}
		return r.JSON(t)
	}
	if v, ok := server()["tools_changed_at"]; !ok || v != nil {
		t.Fatalf("a new server's tools_changed_at = %v (present %v), want null", v, ok)
	}
	// First inventory (through testServer): recorded, no drift yet.
	tsTest(t, env, sid, "")
	vaulttest.Eventually(t, 5*time.Second, func() bool { return len(pxToolsEvents(t, env, sid)) == 1 })
	first := pxToolsEvents(t, env, sid)[0]
	if !first.Initial || len(first.Tools) != 5 || first.Source != "test" {
		t.Fatalf("first inventory event %+v", first)
	}
	// The same inventory seen again, by either path: nothing new.
	a := pxMustConnect(t, env, sid, nil)
	pxToolNames(t, a)
	tsTest(t, env, sid, "")
	time.Sleep(300 * time.Millisecond)
	if n := len(pxToolsEvents(t, env, sid)); n != 1 {
		t.Fatalf("an unchanged inventory appended %d events", n-1)
	}
	if server()["tools_changed_at"] != nil {
		t.Fatal("tools_changed_at set without drift")
	}
	// The upstream adds gamma, drops beta and redefines alpha.
	up.Srv.RemoveTools("beta", "alpha")
	pxAddTool(up.Srv, "gamma", "new")
	pxAddTool(up.Srv, "alpha", "now deletes things")
	b := pxMustConnect(t, env, sid, nil)
	pxToolNames(t, b)
	vaulttest.Eventually(t, 5*time.Second, func() bool { return len(pxToolsEvents(t, env, sid)) == 2 })
	ch := pxToolsEvents(t, env, sid)[1]
	if ch.Initial || ch.Source != "proxy" || !slices.Equal(ch.Added, []string{"gamma"}) ||
		!slices.Equal(ch.Removed, []string{"beta"}) || !slices.Equal(ch.Changed, []string{"alpha"}) {
		t.Fatalf("drift event %+v", ch)
	}
	vaulttest.Eventually(t, 5*time.Second, func() bool { return server()["tools_changed_at"] != nil })
	// Concurrent observers of the same change record it once.
	up.Srv.RemoveTools("gamma")
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); tsTest(t, env, sid, "") }()
	}
	wg.Wait()
	vaulttest.Eventually(t, 5*time.Second, func() bool { return len(pxToolsEvents(t, env, sid)) >= 3 })
	time.Sleep(300 * time.Millisecond)
	if evs := pxToolsEvents(t, env, sid); len(evs) != 3 || !slices.Equal(evs[2].Removed, []string{"gamma"}) {
		t.Fatalf("4 concurrent observers of one change: %d events, last %+v", len(evs), evs[len(evs)-1])
	}
}

// The endpoint's limits answer clearly: message size (413), sessions per
// owner (a JSON-RPC error on initialize), idle sessions (404 session_expired).
func TestProxyLimits(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{MaxMessageBytes: 4096, MaxSessionsPerOwner: 2, IdleTimeout: 400 * time.Millisecond})
	up := pxServe(t, false, func(http.Header) bool { return true }, 0)
	sid := tsCreateServer(t, env, up.URL, pxNever)
	a := pxMustConnect(t, env, sid, nil)
	big := strings.Repeat("x", 5000)
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/mcp", Body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"` + big + `"}}`,
		Header: map[string]string{"Mcp-Session-Id": a.CS.ID(), "Accept": "application/json, text/event-stream"}})
	if r.Status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.Body), "message_too_large") {
		t.Fatalf("oversized message: %d %s", r.Status, r.Body)
	}
	// Two sessions per owner; the third is refused until one ends. Another
	// end user of the same account is another owner.
	b := pxMustConnect(t, env, sid, nil)
	_, err := pxConnect(t, env, sid, vaulttest.KeyA, "", nil)
	if err == nil || !strings.Contains(err.Error(), "session_limit") {
		t.Fatalf("third session: %v", err)
	}
	if _, err := pxConnect(t, env, tsCreateServer(t, env, up.URL, pxNever), vaulttest.KeyA, "", nil); err == nil {
		t.Fatal("the per-owner limit does not count sessions of other servers")
	}
	userSrv := env.MustCreateServer(t, "alice", map[string]any{"name": "A", "server_label": "a", "server_url": up.URL, "require_approval": "never"})
	if _, err := pxConnect(t, env, userSrv, vaulttest.KeyA, "alice", nil); err != nil {
		t.Fatalf("another owner's first session: %v", err)
	}
	// The go-sdk agent sees the size refusal as an error too.
	if _, err := a.CS.CallTool(pxCtx(t), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": big}}); err == nil {
		t.Fatal("a 5000-byte message passed a 4096-byte limit")
	}
	// Idle sessions end; their owner is told so.
	time.Sleep(time.Second)
	r = env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/mcp", Body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
		Header: map[string]string{"Mcp-Session-Id": b.CS.ID(), "Accept": "application/json, text/event-stream"}})
	if r.Status != http.StatusNotFound || !strings.Contains(string(r.Body), "session_expired") {
		t.Fatalf("a session idle for longer than the idle timeout: %d %s", r.Status, r.Body)
	}
	// With the idle sessions gone, the owner may open new ones.
	pxMustConnect(t, env, sid, nil)
	pxMustConnect(t, env, sid, nil)
}

// A use happens while the stream is down: it is appended once the stream is
// back (retried in the background, not lost, not duplicated).
func TestProxyUseSurvivesStreamOutage(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := pxServe(t, false, func(http.Header) bool { return true }, 0)
	sid := tsCreateServer(t, env, up.URL, pxNever)
	cred := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "px-outage-secret-01"})["id"].(string)
	a := pxMustConnect(t, env, sid, nil)
	pxMustCall(t, a, "echo", map[string]any{"text": "warm"})
	vaulttest.Eventually(t, 5*time.Second, func() bool { return len(pxUseEvents(t, env, sid, cred)) == 2 })
	env.StopNATS()
	// With the stream unreachable the read barrier is skipped (as for
	// every read) and the call goes through; its record waits.
	text, rpc := pxCall(t, a, "echo", map[string]any{"text": "during"})
	if rpc != nil || text != "echo:during" {
		t.Fatalf("call during the outage: %q %+v", text, rpc)
	}
	time.Sleep(500 * time.Millisecond)
	env.StartNATS()
	vaulttest.Eventually(t, 20*time.Second, func() bool { return len(pxUseEvents(t, env, sid, cred)) >= 3 })
	time.Sleep(500 * time.Millisecond)
	if n := len(pxUseEvents(t, env, sid, cred)); n != 3 {
		t.Fatalf("%d use events after the outage, want 3", n)
	}
}

// A session answers as SSE streams by default, or with single JSON bodies
// when the agent asks at initialize; go-sdk agents work with both.
func TestProxyJSONResponses(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := pxServe(t, false, func(http.Header) bool { return true }, 0)
	sid := tsCreateServer(t, env, up.URL, pxNever)
	do := func(body, session string, extra map[string]string) vaulttest.Response {
		h := map[string]string{"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-06-18"}
		if session != "" {
			h["Mcp-Session-Id"] = session
		}
		for k, v := range extra {
			h[k] = v
		}
		return env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/mcp", Body: body, Header: h})
	}
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	for _, mode := range []string{"", "json"} {
		r := do(init, "", map[string]string{mcpproxy.HeaderResponse: mode})
		sess := r.Header.Get("Mcp-Session-Id")
		if r.Status != http.StatusOK || sess == "" {
			t.Fatalf("initialize (%q): %d %s", mode, r.Status, r.Body)
		}
		if n := do(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, sess, nil); n.Status != http.StatusAccepted {
			t.Fatalf("initialized: %d", n.Status)
		}
		r = do(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"j"}}}`, sess, nil)
		ct := r.Header.Get("Content-Type")
		if mode == "json" {
			var msg struct {
				Result struct {
					Content []struct{ Text string } `json:"content"`
				} `json:"result"`
			}
			if !strings.HasPrefix(ct, "application/json") || json.Unmarshal(r.Body, &msg) != nil || len(msg.Result.Content) == 0 || msg.Result.Content[0].Text != "echo:j" {
				t.Fatalf("JSON mode answer %q: %s", ct, r.Body)
			}
		} else if !strings.HasPrefix(ct, "text/event-stream") || !strings.Contains(string(r.Body), "echo:j") {
			t.Fatalf("SSE mode answer %q: %s", ct, r.Body)
		}
	}
	a := pxMustConnect(t, env, sid, map[string]string{mcpproxy.HeaderResponse: "json"})
	if got := pxMustCall(t, a, "echo", map[string]any{"text": "sdk"}); got != "echo:sdk" {
		t.Fatalf("go-sdk agent in JSON mode: %q", got)
	}
}

// The newest usable credential is the default; X-Vault-Credential-Id picks
// another; a credential that expires, or is deleted, during a session is
// not sent again.
func TestProxyCredentialSelection(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	var lastAuth atomic.Value
	up := pxServe(t, false, func(h http.Header) bool {
		lastAuth.Store(h.Get("Authorization"))
		return strings.HasPrefix(h.Get("Authorization"), "Bearer px-sel-")
	}, 0)
	sid := tsCreateServer(t, env, up.URL, pxNever)
	older := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "px-sel-older-0001"})["id"].(string)
	expiry := time.Now().Add(3 * time.Second)
	env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "px-sel-newer-0002",
		"expires_at": expiry.UTC().Format(time.RFC3339Nano)})

	a := pxMustConnect(t, env, sid, nil)
	pxMustCall(t, a, "echo", map[string]any{"text": "1"})
	if got := lastAuth.Load(); got != "Bearer px-sel-newer-0002" {
		t.Fatalf("default credential sent %v, want the newest usable", got)
	}
	b := pxMustConnect(t, env, sid, map[string]string{mcpproxy.HeaderCredential: older})
	pxMustCall(t, b, "echo", map[string]any{"text": "2"})
	if got := lastAuth.Load(); got != "Bearer px-sel-older-0001" {
		t.Fatalf("X-Vault-Credential-Id sent %v, want the named credential", got)
	}
	// The newer credential expires: its session stops sending it.
	time.Sleep(time.Until(expiry) + 300*time.Millisecond)
	before := len(up.Rec.all())
	if _, rpc := pxCall(t, a, "echo", map[string]any{"text": "3"}); rpc == nil || !strings.Contains(rpc.Message, "credential_expired") {
		t.Fatalf("call after expiry: %+v", rpc)
	}
	if after := len(up.Rec.all()); after != before {
		t.Fatalf("%d requests reached the upstream after the expiry", after-before)
	}
	// A new session now defaults to the older credential, the only usable one.
	c := pxMustConnect(t, env, sid, nil)
	pxMustCall(t, c, "echo", map[string]any{"text": "4"})
	if got := lastAuth.Load(); got != "Bearer px-sel-older-0001" {
		t.Fatalf("after expiry the default sent %v", got)
	}
	// Deleting the credential stops its sessions too.
	if r := env.Do(t, vaulttest.Request{Method: "DELETE", Path: "/servers/" + sid + "/credentials/" + older}); r.Status != http.StatusOK {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if _, rpc := pxCall(t, b, "echo", map[string]any{"text": "5"}); rpc == nil || !strings.Contains(rpc.Message, "credential_deleted") {
		t.Fatalf("call after delete: %+v", rpc)
	}
}
