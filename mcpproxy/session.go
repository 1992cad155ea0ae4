package mcpproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/upstream"
)

// session is one vault session: the agent's side (an mcp.Server of its
// own and, once initialized, its ServerSession) and the upstream side.
type session struct {
	p        *Proxy
	id       string
	owner    events.Owner
	serverID string
	cred     domain.Credential // zero: none is sent
	server   *mcp.Server
	handler  *mcp.StreamableHTTPHandler // the SSE or the JSON handler, for the session's life
	up       *upstream.Session

	ss          atomic.Pointer[mcp.ServerSession]
	lastActive  atomic.Int64 // unix nanoseconds of the last request's start or end
	inflight    atomic.Int32
	dead        atomic.Pointer[jsonrpc.Error]  // set once the session can no longer reach upstream
	listed      atomic.Bool                    // tools/list recorded for this session
	initialized atomic.Bool                    // the agent sent notifications/initialized
	check       atomic.Pointer[app.ProxyCheck] // the last check of server and credential
	endOnce     sync.Once

	progress sync.Map // progress token (fmt.Sprint) -> *progressRoute

	inv struct {
		sync.Mutex
		pages  map[string]string // inventory being assembled from tools/list pages
		digest string            // the last complete inventory compared
	}
}

// progressRoute is where an upstream progress notification goes: the
// agent's tools/call, on its own stream.
type progressRoute struct {
	ctx context.Context
	ss  *mcp.ServerSession
}

func (s *session) touch() { s.lastActive.Store(time.Now().UnixNano()) }

// open resolves the credential, connects upstream and builds the session's
// mcp.Server, mirroring the upstream's identity, instructions and
// capabilities.
func (p *Proxy) open(ctx context.Context, c Caller, credentialID string) (*session, *rpcError) {
	t, err := p.vault.OpenProxy(ctx, c.Owner, c.ServerID, credentialID)
	if err != nil {
		return nil, vaultRPCError(err)
	}
	s := &session{p: p, id: newSessionID(), owner: c.Owner, serverID: c.ServerID, cred: t.Credential}
	auth := upstream.Auth{Type: upstream.AuthNone}
	if t.Credential.ID != "" {
		auth = upstream.Auth{Type: t.Credential.AuthType, BearerToken: t.Secret.BearerToken,
			Authorization: t.Secret.Authorization, Headers: t.Secret.Headers}
	}
	t.Secret = domain.Secret{}
	client := mcp.NewClient(&mcp.Implementation{Name: "mcp-vault", Version: "1"}, &mcp.ClientOptions{
		Capabilities:                &mcp.ClientCapabilities{},
		ProgressNotificationHandler: s.onProgress,
	})
	up, fail := p.dialer.Dial(ctx, t.Server.ServerURL, auth, client)
	if fail != nil {
		if s.cred.ID != "" && fail.Code == upstream.CodeCredentialRejected {
			p.vault.RecordUse(s.cred, events.CredentialUsed{Operation: "initialize", Outcome: "failed",
				ErrorCode: fail.Code, TargetHost: hostOf(t.Server.ServerURL)})
		}
		return nil, &rpcError{code: CodeUpstream, msg: "upstream_" + fail.Code + ": " + fail.Message}
	}
	s.up = up
	ui := up.Client.InitializeResult()
	impl := &mcp.Implementation{Name: "mcp-vault", Version: "1"}
	caps := &mcp.ServerCapabilities{}
	var instructions string
	if ui != nil {
		if ui.ServerInfo != nil {
			impl = ui.ServerInfo
		}
		instructions = ui.Instructions
		if uc := ui.Capabilities; uc != nil {
			if uc.Tools != nil {
				caps.Tools = &mcp.ToolCapabilities{}
			}
			if uc.Resources != nil {
				caps.Resources = &mcp.ResourceCapabilities{}
			}
			if uc.Prompts != nil {
				caps.Prompts = &mcp.PromptCapabilities{}
			}
			if uc.Completions != nil {
				caps.Completions = &mcp.CompletionCapabilities{}
			}
		}
	}
	s.server = mcp.NewServer(impl, &mcp.ServerOptions{
		Instructions:              instructions,
		Capabilities:              caps,
		GetSessionID:              func() string { return s.id },
		SupportedProtocolVersions: legacyVersions,
	})
	s.server.AddReceivingMiddleware(s.middleware)
	s.touch()
	p.mu.Lock()
	p.sessions[s.id] = s
	p.mu.Unlock()
	return s, nil
}

// end closes both sides once and forgets the session.
func (s *session) end(reason string) {
	s.endOnce.Do(func() {
		s.p.remove(s, reason)
		if ss := s.ss.Load(); ss != nil {
			_ = ss.Close()
		}
		if s.up != nil {
			_ = s.up.Close()
		}
	})
}

// bind records the agent's ServerSession once initialize succeeded.
func (s *session) bind(ss *mcp.ServerSession) {
	if !s.ss.CompareAndSwap(nil, ss) {
		return
	}
	go func() {
		_ = ss.Wait()
		reason := "deleted"
		if time.Duration(time.Now().UnixNano()-s.lastActive.Load()) > s.p.opts.IdleTimeout {
			reason = "idle"
		}
		s.end(reason)
	}()
	if s.cred.ID != "" {
		s.p.vault.RecordUse(s.cred, events.CredentialUsed{Operation: "initialize", Outcome: "connected",
			TargetHost: s.up.TargetHost})
	}
}

// middleware is the vault between the agent and the upstream.
func (s *session) middleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		switch method {
		case "initialize":
			res, err := next(ctx, method, req)
			if err == nil {
				if ss, ok := req.GetSession().(*mcp.ServerSession); ok {
					s.bind(ss)
				}
			}
			return res, err
		case "notifications/initialized":
			s.initialized.Store(true)
			return next(ctx, method, req)
		case "notifications/cancelled", "notifications/progress",
			"notifications/roots/list_changed", "ping", "logging/setLevel":
			return next(ctx, method, req)
		}
		if e := s.dead.Load(); e != nil {
			return nil, e
		}
		chk, err := s.p.vault.CheckProxy(ctx, s.owner, s.serverID, s.cred.ID, s.check.Load())
		if err != nil {
			return nil, s.refuse(err)
		}
		s.check.Store(chk)
		srv := chk.Server()
		switch r := req.(type) {
		case *mcp.ListToolsRequest:
			return s.listTools(ctx, srv, r)
		case *mcp.CallToolRequest:
			return s.callTool(ctx, srv, r)
		case *mcp.ListResourcesRequest:
			return relay(s, ctx, func(ctx context.Context) (*mcp.ListResourcesResult, error) {
				return s.up.Client.ListResources(ctx, r.Params)
			})
		case *mcp.ListResourceTemplatesRequest:
			return relay(s, ctx, func(ctx context.Context) (*mcp.ListResourceTemplatesResult, error) {
				return s.up.Client.ListResourceTemplates(ctx, r.Params)
			})
		case *mcp.ReadResourceRequest:
			return relay(s, ctx, func(ctx context.Context) (*mcp.ReadResourceResult, error) {
				return s.up.Client.ReadResource(ctx, r.Params)
			})
		case *mcp.ListPromptsRequest:
			return relay(s, ctx, func(ctx context.Context) (*mcp.ListPromptsResult, error) {
				return s.up.Client.ListPrompts(ctx, r.Params)
			})
		case *mcp.GetPromptRequest:
			return relay(s, ctx, func(ctx context.Context) (*mcp.GetPromptResult, error) {
				return s.up.Client.GetPrompt(ctx, r.Params)
			})
		case *mcp.CompleteRequest:
			return relay(s, ctx, func(ctx context.Context) (*mcp.CompleteResult, error) {
				return s.up.Client.Complete(ctx, r.Params)
			})
		}
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound,
			Message: fmt.Sprintf("the vault does not relay %q", method)}
	}
}

// refuse turns a failed check into the agent's error; a credential or
// server that is gone ends the upstream side for good.
func (s *session) refuse(err error) error {
	e := vaultRPCError(err)
	je := &jsonrpc.Error{Code: e.code, Message: e.msg}
	if e.code == CodeCredentialUnusable {
		if s.dead.CompareAndSwap(nil, je) {
			go s.up.Abandon()
		}
	}
	return je
}

// vaultRPCError maps an application error to a JSON-RPC refusal.
func vaultRPCError(err error) *rpcError {
	var de *domain.Error
	switch {
	case errors.Is(err, domain.ErrServerNotFound):
		return &rpcError{code: CodeCredentialUnusable, msg: "server_not_found: the MCP server no longer exists for this owner; the vault sends nothing upstream."}
	case errors.Is(err, domain.ErrCredentialNotFound):
		return &rpcError{code: CodeCredentialUnusable, msg: "credential_not_found: no such credential on this server (" + HeaderCredential + ")."}
	case errors.As(err, &de) && de.Code != "":
		return &rpcError{code: CodeCredentialUnusable, msg: de.Code + ": " + de.Message}
	case errors.Is(err, app.ErrUseBacklog):
		return &rpcError{code: CodeVaultUnavailable, msg: "use_backlog: " + err.Error()}
	case errors.Is(err, app.ErrReadModelBehind), errors.Is(err, app.ErrUnavailable):
		return &rpcError{code: CodeVaultUnavailable, msg: "vault_unavailable: " + err.Error()}
	}
	return &rpcError{code: CodeVaultUnavailable, msg: "vault_unavailable: the vault could not check this request; retry shortly."}
}

// relay forwards one request upstream and scrubs the answer.
func relay[R mcp.Result](s *session, ctx context.Context, call func(context.Context) (R, error)) (mcp.Result, error) {
	cctx, cancel := context.WithTimeout(ctx, s.p.opts.CallTimeout)
	defer cancel()
	res, err := call(cctx)
	if err != nil {
		return nil, s.up.CallError(cctx, err)
	}
	return scrubResult(s, res), nil
}

// scrubResult replaces any secret of the credential the upstream echoed
// back in an answer.
func scrubResult[R mcp.Result](s *session, res R) R {
	if !s.up.HasSecrets() {
		return res
	}
	b, err := json.Marshal(res)
	if err != nil {
		return res
	}
	clean, found := s.up.ScrubBytes(b)
	if !found {
		return res
	}
	out := reflect.New(reflect.TypeOf(res).Elem()).Interface().(R)
	if json.Unmarshal(clean, out) != nil {
		var zero R
		return zero
	}
	return out
}

// listTools relays one page of tools/list, keeps only allowed tools (the
// cursor is the upstream's, so pagination works unchanged), and feeds the
// drift check with the unfiltered inventory.
func (s *session) listTools(ctx context.Context, srv domain.Server, r *mcp.ListToolsRequest) (mcp.Result, error) {
	params := &mcp.ListToolsParams{}
	if r.Params != nil {
		params.Cursor = r.Params.Cursor
	}
	cctx, cancel := context.WithTimeout(ctx, s.p.opts.CallTimeout)
	defer cancel()
	res, err := s.up.Client.ListTools(cctx, params)
	if err != nil {
		return nil, s.up.CallError(cctx, err)
	}
	s.observe(srv, params.Cursor, res)
	out := &mcp.ListToolsResult{NextCursor: res.NextCursor, Tools: []*mcp.Tool{}}
	for _, t := range res.Tools {
		if allowed(srv.AllowedTools, t.Name) {
			out.Tools = append(out.Tools, t)
		}
	}
	if s.cred.ID != "" && s.listed.CompareAndSwap(false, true) {
		s.p.vault.RecordUse(s.cred, events.CredentialUsed{Operation: "tools/list", Outcome: "ok",
			ToolCount: len(out.Tools), TargetHost: s.up.TargetHost})
	}
	return scrubResult(s, out), nil
}

// observe assembles the inventory from the pages an agent reads; once the
// last page is in and the inventory differs from the one compared last in
// this session, the vault compares it with the recorded one (app.ObserveTools).
func (s *session) observe(srv domain.Server, cursor string, page *mcp.ListToolsResult) {
	s.inv.Lock()
	defer s.inv.Unlock()
	if cursor == "" {
		s.inv.pages = map[string]string{}
	}
	if s.inv.pages == nil {
		return // a page in the middle, without the first: not a whole inventory
	}
	for _, t := range page.Tools {
		if t != nil {
			if _, seen := s.inv.pages[t.Name]; !seen {
				s.inv.pages[t.Name] = upstream.ToolHash(t)
			}
		}
	}
	if page.NextCursor != "" {
		return
	}
	inv := s.inv.pages
	s.inv.pages = nil
	d := digest(inv)
	if d == s.inv.digest {
		return
	}
	s.inv.digest = d
	s.p.vault.ObserveTools(srv, inv, "proxy")
}

func digest(inv map[string]string) string {
	names := slices.Sorted(maps.Keys(inv))
	b, _ := json.Marshal([]any{names, inv})
	return string(b)
}

func allowed(list []string, name string) bool {
	return list == nil || slices.Contains(list, name)
}

// callTool applies the policy, relays the call and queues its use record.
func (s *session) callTool(ctx context.Context, srv domain.Server, r *mcp.CallToolRequest) (mcp.Result, error) {
	s.p.sdkCalls.Add(1)
	p := r.Params
	if p == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "tools/call needs params"}
	}
	if !allowed(srv.AllowedTools, p.Name) {
		return nil, &jsonrpc.Error{Code: CodeToolNotAllowed, Message: fmt.Sprintf(
			"tool_not_allowed: %q is not in this server's allowed_tools; the vault did not send the call upstream.", p.Name)}
	}
	meta := mcp.Meta{}
	approval := ""
	for k, v := range p.Meta {
		if k == MetaApproval {
			approval, _ = v.(string)
			continue
		}
		meta[k] = v
	}
	if r.Extra != nil && r.Extra.Header != nil {
		if h := r.Extra.Header.Get(HeaderApproval); h != "" {
			approval = h
		}
	}
	if srv.RequireApproval == domain.RequireAlways {
		if err := s.approve(approval, p); err != nil {
			return nil, err
		}
	}
	var slot *app.UseSlot
	if s.cred.ID != "" {
		var err error
		if slot, err = s.p.vault.ReserveUse(ctx); err != nil {
			return nil, &jsonrpc.Error{Code: CodeVaultUnavailable, Message: "use_backlog: " + err.Error()}
		}
	}
	if tok := p.GetProgressToken(); tok != nil {
		if ss := s.ss.Load(); ss != nil {
			key := fmt.Sprint(tok)
			s.progress.Store(key, &progressRoute{ctx: ctx, ss: ss})
			defer s.progress.Delete(key)
		}
	}
	args := any(nil)
	if len(p.Arguments) > 0 {
		args = p.Arguments
	}
	if len(meta) == 0 {
		meta = nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.p.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	res, err := s.up.Client.CallTool(cctx, &mcp.CallToolParams{Meta: meta, Name: p.Name, Arguments: args})
	latency := time.Since(start)
	use := events.CredentialUsed{Operation: "tools/call", Outcome: "ok", ToolName: p.Name,
		TargetHost: s.up.TargetHost, LatencyMS: float64(latency.Microseconds()) / 1000}
	var rerr *jsonrpc.Error
	if err != nil {
		rerr = s.up.CallError(cctx, err)
		use.Outcome, use.ErrorCode = "failed", rpcErrorCode(rerr)
	} else if res.IsError {
		use.Outcome = "tool_error"
	}
	if slot != nil {
		slot.Record(s.cred, use, start)
	}
	if rerr != nil {
		return nil, rerr
	}
	return scrubResult(s, res), nil
}

// rpcErrorCode is the stable code of an upstream failure for the use event.
func rpcErrorCode(e *jsonrpc.Error) string {
	if e.Code == CodeUpstream {
		for i := 0; i < len(e.Message); i++ {
			if e.Message[i] == ':' {
				return e.Message[:i]
			}
		}
		return "upstream_error"
	}
	return fmt.Sprintf("jsonrpc_%d", e.Code)
}

// approve consumes the call's approval, or says how to get one.
func (s *session) approve(id string, p *mcp.CallToolParamsRaw) error {
	hash, _ := app.ArgumentsHash(p.Arguments)
	data, _ := json.Marshal(map[string]any{
		"server_id":        s.serverID,
		"tool_name":        p.Name,
		"arguments_sha256": hash,
		"approvals_url":    "/api/v1/llm/mcp/servers/" + s.serverID + "/approvals",
	})
	if id == "" {
		return &jsonrpc.Error{Code: CodeApprovalRequired, Data: data, Message: fmt.Sprintf(
			"approval_required: this server has require_approval \"always\"; the call to %q was not sent. "+
				"Ask the user, then POST /api/v1/llm/mcp/servers/%s/approvals with {\"tool_name\":%q,\"arguments\":<the same arguments>} "+
				"and repeat the call with the header %s: <approval id> (or _meta %q).",
			p.Name, s.serverID, p.Name, HeaderApproval, MetaApproval)}
	}
	if err := s.p.vault.UseApproval(s.owner, s.serverID, id, p.Name, p.Arguments); err != nil {
		return &jsonrpc.Error{Code: CodeApprovalRequired, Data: data, Message: fmt.Sprintf(
			"approval_invalid: the %s given is unknown, already used, expired, or was issued for another server, tool or arguments; the call to %q was not sent.",
			HeaderApproval, p.Name)}
	}
	return nil
}

// onProgress passes an upstream progress notification to the agent's call
// it belongs to, on that call's stream.
func (s *session) onProgress(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
	if req == nil || req.Params == nil {
		return
	}
	v, ok := s.progress.Load(fmt.Sprint(req.Params.ProgressToken))
	if !ok {
		return
	}
	route := v.(*progressRoute)
	params := *req.Params
	if s.up != nil {
		params.Message = s.up.Scrub(params.Message)
	}
	_ = route.ss.NotifyProgress(route.ctx, &params)
}
