package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/mcpproxy"
)

// The relay (mcpproxy's fast path for tools/call) against the SDK path:
// the same policy, errors and records, and the same answers to a go-sdk
// agent.

// rlToolCalls reads vault_mcp_tool_calls_total: the tools/call served by
// the relay and by the SDK path so far.
func rlToolCalls(t *testing.T, env *vaulttest.Env) (relay, sdk int) {
	t.Helper()
	for _, line := range strings.Split(hdScrape(t, env.URL), "\n") {
		for path, dst := range map[string]*int{"relay": &relay, "sdk": &sdk} {
			if rest, ok := strings.CutPrefix(line, `vault_mcp_tool_calls_total{path="`+path+`"} `); ok {
				n, err := strconv.ParseFloat(rest, 64)
				if err != nil {
					t.Fatalf("metric line %q", line)
				}
				*dst = int(n)
			}
		}
	}
	return relay, sdk
}

// rlUpstream is a go-sdk upstream (Streamable HTTP) behind a middleware
// that records the JSON-RPC id of every request and can answer tools/call
// with an HTTP failure instead (mode).
type rlUpstream struct {
	URL   string
	mode  atomic.Value // "", "500", "401", "404", "400", "hang"
	calls atomic.Int64 // tools/call that reached the upstream
	mu    sync.Mutex
	ids   map[string][]string // method -> raw ids
}

func (u *rlUpstream) idsOf(method string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.ids[method]...)
}

func rlServe(t *testing.T, jsonResponse bool) *rlUpstream {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "rl-upstream", Version: "1"}, nil)
	pxAddTool(s, "echo", "echoes")
	mcp.AddTool(s, &mcp.Tool{Name: "slowecho", Description: "echoes after 20 ms"},
		func(_ context.Context, _ *mcp.CallToolRequest, in pxEchoArgs) (*mcp.CallToolResult, any, error) {
			time.Sleep(20 * time.Millisecond)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "a tool error"},
		func(context.Context, *mcp.CallToolRequest, tsNoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "it broke"}}}, nil, nil
		})
	u := &rlUpstream{ids: map[string][]string{}}
	u.mode.Store("")
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{JSONResponse: jsonResponse})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var m struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
			}
			_ = json.Unmarshal(body, &m)
			u.mu.Lock()
			u.ids[m.Method] = append(u.ids[m.Method], string(m.ID))
			u.mu.Unlock()
			if m.Method == "tools/call" {
				u.calls.Add(1)
				switch mode := u.mode.Load().(string); mode {
				case "500", "401", "404", "400":
					code, _ := strconv.Atoi(mode)
					http.Error(w, "failure "+mode, code)
					return
				case "hang":
					select {
					case <-r.Context().Done():
					case <-time.After(5 * time.Second):
					}
					return
				}
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.URL = srv.URL + "/mcp"
	return u
}

// tools/call on a Streamable HTTP upstream takes the relay (as the
// metric and the upstream's request ids show), in SSE and JSON sessions;
// an HTTP+SSE upstream, or DisableRelay, keeps the SDK path.
func TestProxyRelayIsTaken(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	for _, jsonUp := range []bool{false, true} {
		up := rlServe(t, jsonUp)
		sid := tsCreateServer(t, env, up.URL, pxNever)
		env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "rl-taken-secret-01"})
		for _, mode := range []string{"", "json"} {
			relay0, sdk0 := rlToolCalls(t, env)
			a := pxMustConnect(t, env, sid, map[string]string{mcpproxy.HeaderResponse: mode})
			for i := range 3 {
				if got := pxMustCall(t, a, "echo", map[string]any{"text": strconv.Itoa(i)}); got != "echo:"+strconv.Itoa(i) {
					t.Fatalf("echo = %q", got)
				}
			}
			if relay, sdk := rlToolCalls(t, env); relay-relay0 != 3 || sdk != sdk0 {
				t.Fatalf("upstream json=%v, session %q: relay %d, sdk %d tools/call; want 3 relayed", jsonUp, mode, relay-relay0, sdk-sdk0)
			}
		}
		for _, id := range up.idsOf("tools/call") {
			if !strings.HasPrefix(id, `"vault-relay-`) {
				t.Fatalf("a tools/call reached the upstream with id %s, not the relay's", id)
			}
		}
	}
	legacy := pxServe(t, true, func(http.Header) bool { return true }, 0)
	a := pxMustConnect(t, env, tsCreateServer(t, env, legacy.URL, pxNever), nil)
	relay0, sdk0 := rlToolCalls(t, env)
	pxMustCall(t, a, "echo", map[string]any{"text": "sse"})
	if relay, sdk := rlToolCalls(t, env); relay != relay0 || sdk != sdk0+1 {
		t.Fatalf("HTTP+SSE upstream: relay +%d, sdk +%d; want the SDK path", relay-relay0, sdk-sdk0)
	}
	off := pxStart(t, mcpproxy.Options{DisableRelay: true})
	up := rlServe(t, false)
	b := pxMustConnect(t, off, tsCreateServer(t, off, up.URL, pxNever), nil)
	pxMustCall(t, b, "echo", map[string]any{"text": "off"})
	if relay, sdk := rlToolCalls(t, off); relay != 0 || sdk != 1 {
		t.Fatalf("DisableRelay: relay %d, sdk %d", relay, sdk)
	}
}

// Concurrent calls on the relay while the vault's own SDK client uses the
// same upstream session (tools/list) never get each other's answers: the
// relay's ids are strings, the SDK client's numbers, and the agent's own
// ids (numbers from 1, like the SDK client's) never go upstream.
func TestProxyRelayIDsDoNotCollide(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := rlServe(t, false)
	sid := tsCreateServer(t, env, up.URL, pxNever)
	a := pxMustConnect(t, env, sid, nil)
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				want := fmt.Sprintf("g%d-i%d", g, i)
				res, err := a.CS.CallTool(pxCtx(t), &mcp.CallToolParams{Name: "slowecho", Arguments: map[string]any{"text": want}})
				if err != nil {
					errs <- fmt.Sprintf("call %s: %v", want, err)
					return
				}
				if got := res.Content[0].(*mcp.TextContent).Text; got != want {
					errs <- fmt.Sprintf("call %s answered %q", want, got)
				}
			}
		}()
	}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				res, err := a.CS.ListTools(pxCtx(t), nil)
				if err != nil || len(res.Tools) != 3 {
					errs <- fmt.Sprintf("tools/list: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	calls := up.idsOf("tools/call")
	seen := map[string]bool{}
	for _, id := range calls {
		if !strings.HasPrefix(id, `"vault-relay-`) || seen[id] {
			t.Fatalf("tools/call id %s upstream: not a fresh relay id", id)
		}
		seen[id] = true
	}
	lists := up.idsOf("tools/list")
	for _, id := range lists {
		if _, err := strconv.Atoi(id); err != nil {
			t.Fatalf("tools/list id %s upstream: the SDK client's ids are numbers", id)
		}
	}
	if len(calls) != 80 || len(lists) != 30 {
		t.Fatalf("the upstream saw %d tools/call and %d tools/list, want 80 and 30", len(calls), len(lists))
	}
}

// On the relay, the vault's refusals are the SDK path's: a tool outside
// allowed_tools, a missing approval, a revoked credential; none reaches
// the upstream, and none is a use.
func TestProxyRelayRefusals(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	up := rlServe(t, false)
	sid := tsCreateServer(t, env, up.URL, map[string]any{"allowed_tools": []string{"echo"}})
	cred := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "rl-refuse-secret-01"})["id"].(string)
	a := pxMustConnect(t, env, sid, nil)
	relay0, _ := rlToolCalls(t, env)
	if _, rpc := pxCall(t, a, "fail", nil); rpc == nil || rpc.Code != mcpproxy.CodeToolNotAllowed ||
		rpc.Message != `tool_not_allowed: "fail" is not in this server's allowed_tools; the vault did not send the call upstream.` {
		t.Fatalf("tool outside allowed_tools: %+v", rpc)
	}
	_, rpc := pxCall(t, a, "echo", map[string]any{"text": "x"})
	if rpc == nil || rpc.Code != mcpproxy.CodeApprovalRequired || !strings.HasPrefix(rpc.Message, "approval_required") {
		t.Fatalf("unapproved call: %+v", rpc)
	}
	var data map[string]any
	if json.Unmarshal(rpc.Data, &data) != nil || data["tool_name"] != "echo" || data["server_id"] != sid {
		t.Fatalf("approval_required data %s", rpc.Data)
	}
	if n := up.calls.Load(); n != 0 {
		t.Fatalf("%d refused calls reached the upstream", n)
	}
	apr := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/approvals",
		Body: map[string]any{"tool_name": "echo", "arguments": map[string]any{"text": "x"}}}).JSON(t)["id"].(string)
	p := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}, Meta: mcp.Meta{mcpproxy.MetaApproval: apr}}
	if res, err := a.CS.CallTool(pxCtx(t), p); err != nil || res.Content[0].(*mcp.TextContent).Text != "echo:x" {
		t.Fatalf("approved call (approval in _meta): %v %v", res, err)
	}
	if _, rpc := pxCall(t, a, "echo", map[string]any{"text": "x"}); rpc == nil || rpc.Code != mcpproxy.CodeApprovalRequired {
		t.Fatalf("a second call on a used approval: %+v", rpc)
	}
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + sid + "/credentials/" + cred + "/revoke"})
	if r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if _, rpc := pxCall(t, a, "echo", map[string]any{"text": "y"}); rpc == nil || rpc.Code != mcpproxy.CodeCredentialUnusable ||
		!strings.HasPrefix(rpc.Message, "credential_revoked") {
		t.Fatalf("call after revoke: %+v", rpc)
	}
	if _, rpc := pxCall(t, a, "echo", map[string]any{"text": "z"}); rpc == nil || rpc.Code != mcpproxy.CodeCredentialUnusable {
		t.Fatalf("second call after revoke: %+v", rpc)
	}
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("%d calls reached the upstream, want only the approved one", n)
	}
	if relay, sdk := rlToolCalls(t, env); relay-relay0 != 6 || sdk != 0 {
		t.Fatalf("relay +%d, sdk %d: the refusals were not on the relay", relay-relay0, sdk)
	}
	time.Sleep(200 * time.Millisecond)
	calls := 0
	for _, u := range pxUseEvents(t, env, sid, cred) {
		if u.Operation == "tools/call" {
			calls++
		}
	}
	if calls != 1 {
		t.Fatalf("%d tools/call use events, want 1 (refusals are not uses)", calls)
	}
}

// Upstream failures on the relay: the same JSON-RPC codes and messages as
// the SDK path (HTTP 500 and an upstream session gone are upstream_error,
// a hang is a timeout, 401 credential_rejected, another HTTP error
// not_mcp_server, an upstream JSON-RPC error
// keeps its code), the same survival of the session (a 500 or a timeout
// leaves it usable; a rejected credential or a session gone upstream ends
// it), the use recorded as failed with its code; a tool error is a
// tool_error.
func TestProxyRelayUpstreamErrors(t *testing.T) {
	type outcome struct {
		code     int64
		prefix   string
		survives bool
	}
	run := func(t *testing.T, disable bool) (map[string]outcome, *vaulttest.Env, string, string) {
		env := pxStart(t, mcpproxy.Options{CallTimeout: 700 * time.Millisecond, DisableRelay: disable})
		up := rlServe(t, false)
		sid := tsCreateServer(t, env, up.URL, pxNever)
		cred := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "rl-errors-secret-01"})["id"].(string)
		out := map[string]outcome{}
		for _, mode := range []string{"500", "hang", "401", "404", "400", "rpc"} {
			a := pxMustConnect(t, env, sid, nil)
			up.mode.Store(mode)
			tool := "echo"
			if mode == "rpc" {
				tool = "nosuch" // the upstream answers a JSON-RPC error
			}
			_, rpc := pxCall(t, a, tool, map[string]any{"text": "x"})
			up.mode.Store("")
			if rpc == nil {
				t.Fatalf("mode %s: the call succeeded", mode)
			}
			if strings.Contains(rpc.Message, "rl-errors-secret-01") {
				t.Fatalf("mode %s: the secret in the error %q", mode, rpc.Message)
			}
			o := outcome{code: rpc.Code, prefix: rpc.Message}
			if i := strings.IndexByte(rpc.Message, ':'); i > 0 {
				o.prefix = rpc.Message[:i]
			}
			_, rpc = pxCall(t, a, "echo", map[string]any{"text": "after"})
			o.survives = rpc == nil
			out[mode] = o
		}
		a := pxMustConnect(t, env, sid, nil)
		res, err := a.CS.CallTool(pxCtx(t), &mcp.CallToolParams{Name: "fail", Arguments: map[string]any{}})
		if err != nil || !res.IsError {
			t.Fatalf("tool error: %v %v", res, err)
		}
		return out, env, sid, cred
	}
	relay, env, sid, cred := run(t, false)
	sdk, _, _, _ := run(t, true)
	for mode, want := range sdk {
		got := relay[mode]
		if got != want {
			t.Errorf("upstream %s: relay gave %+v, the SDK path %+v", mode, got, want)
		}
		t.Logf("upstream %s: relay %+v, sdk %+v", mode, got, want)
	}
	for mode, prefix := range map[string]string{"500": "upstream_error", "hang": "timeout", "401": "credential_rejected", "404": "upstream_error", "400": "not_mcp_server"} {
		if relay[mode].prefix != prefix {
			t.Errorf("upstream %s on the relay: message starts %q, want %q", mode, relay[mode].prefix, prefix)
		}
	}
	if r, s := rlToolCalls(t, env); r == 0 || s != 0 {
		t.Fatalf("relay %d, sdk %d", r, s)
	}
	outcomes := map[string]int{}
	vaulttest.Eventually(t, 5*time.Second, func() bool {
		outcomes = map[string]int{}
		for _, u := range pxUseEvents(t, env, sid, cred) {
			if u.Operation == "tools/call" {
				outcomes[u.Outcome+"/"+u.ErrorCode]++
			}
		}
		return outcomes["tool_error/"] == 1
	})
	want := map[string]int{"failed/upstream_error": 2, "failed/timeout": 1, "failed/credential_rejected": 1, "failed/not_mcp_server": 1,
		"failed/jsonrpc_-32602": 1, "ok/": 3, "tool_error/": 1}
	for k, n := range want {
		if outcomes[k] != n {
			t.Fatalf("use events by outcome %v, want %v", outcomes, want)
		}
	}
}

// rlRawUpstream is a hand-written MCP server (Streamable HTTP) whose tool
// results and progress messages carry the bearer token it was sent,
// written as JSON escapes the go-sdk would never produce: form turns the
// token into the bytes inside the JSON string.
func rlRawUpstream(t *testing.T, sse bool, form func(string) string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
			return
		case http.MethodPost:
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Meta struct {
					ProgressToken json.RawMessage `json:"progressToken"`
				} `json:"_meta"`
			} `json:"params"`
		}
		if json.Unmarshal(body, &m) != nil || len(m.ID) == 0 {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		var result string
		switch m.Method {
		case "initialize":
			w.Header().Set("Mcp-Session-Id", "raw-session-1")
			result = `{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"raw","version":"1"}}`
		case "tools/list":
			result = `{"tools":[{"name":"leak","inputSchema":{"type":"object"}}]}`
		case "tools/call":
			result = `{"content":[{"type":"text","text":"token=` + form(token) + `"}]}`
		default:
			result = `{}`
		}
		resp := `{"jsonrpc":"2.0","id":` + string(m.ID) + `,"result":` + result + `}`
		if !sse || m.Method != "tools/call" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, resp)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		if len(m.Params.Meta.ProgressToken) > 0 {
			_, _ = io.WriteString(w, `event: message`+"\n"+`data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":`+
				string(m.Params.Meta.ProgressToken)+`,"progress":1,"message":"using `+form(token)+`"}}`+"\n\n")
			w.(http.Flusher).Flush()
		}
		_, _ = io.WriteString(w, "event: message\ndata: "+resp+"\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// An upstream that echoes the credential, plainly or escaped (\u, \/), in
// a JSON or an SSE answer and in progress messages: the agent never gets
// the secret back through the relay.
func TestProxyRelayScrubsEscapedSecrets(t *testing.T) {
	env := pxStart(t, mcpproxy.Options{})
	const secret = "rl/scrub/secret-0042"
	forms := map[string]func(string) string{
		"plain": func(s string) string { return s },
		"u-escaped": func(s string) string {
			var b strings.Builder
			for _, r := range s {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
			return b.String()
		},
		"slash-escaped": func(s string) string { return strings.ReplaceAll(s, "/", `\/`) },
	}
	for name, form := range forms {
		for _, sse := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sse=%v", name, sse), func(t *testing.T) {
				sid := tsCreateServer(t, env, rlRawUpstream(t, sse, form), pxNever)
				env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": secret})
				a := pxMustConnect(t, env, sid, nil)
				relay0, _ := rlToolCalls(t, env)
				params := &mcp.CallToolParams{Name: "leak", Arguments: map[string]any{}}
				params.SetProgressToken("rl-progress")
				res, err := a.CS.CallTool(pxCtx(t), params)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := json.Marshal(res)
				tsMustNoSecret(t, "the relayed result", raw, secret)
				if text := res.Content[0].(*mcp.TextContent).Text; text != "token="+"[REDACTED]" {
					t.Fatalf("relayed text %q", text)
				}
				if sse {
					select {
					case p := <-a.progress:
						b, _ := json.Marshal(p)
						tsMustNoSecret(t, "a relayed progress notification", b, secret)
						if p.Message != "using [REDACTED]" {
							t.Fatalf("progress message %q", p.Message)
						}
					case <-time.After(5 * time.Second):
						t.Fatal("no progress notification reached the agent")
					}
				}
				if relay, _ := rlToolCalls(t, env); relay != relay0+1 {
					t.Fatal("the call did not take the relay")
				}
			})
		}
	}
}
