// Package mcpproxy is the vault's MCP endpoint: an agent speaks MCP
// (Streamable HTTP) to /api/v1/llm/mcp/servers/{server_id}/mcp and the
// vault relays to the server's upstream, injecting a stored credential the
// agent never sees.
//
// # Design: go-sdk on both sides, and a raw relay for tools/call
//
// Each vault session is an mcp.Server of its own, served by the SDK's
// StreamableHTTPHandler, whose receiving middleware forwards every request
// to an mcp.ClientSession opened upstream (package upstream: SSRF guard,
// origin pinning, credential injection, Streamable HTTP with HTTP+SSE
// fallback). The SDK was chosen over a lower-level byte relay for the
// session as a whole because:
//   - the SDK already implements both transports on both sides (POST answered
//     as an SSE stream, GET stream, DELETE, legacy SSE upstream), their
//     framing and protocol-version negotiation; a relay would re-implement all
//     of it and translate between Streamable HTTP and legacy SSE itself;
//   - notifications do stream through: a handler's context routes
//     notifications to the HTTP response of the request being handled, so a
//     progress notification arriving upstream for a tools/call is sent with
//     ServerSession.NotifyProgress on that call's context and reaches the
//     agent on the call's own SSE stream before the result;
//   - policy needs typed messages anyway (tools/list filtering with the
//     cursor kept, tools/call refusals, approvals), which the middleware gets
//     decoded.
//
// That costs one decode and one encode of each message on each side, which
// made tools/call — the message an agent sends most — several times the
// cost of the call itself. So tools/call has a fast path, the relay
// (relay.go): when a POST of an initialized session carries one tools/call
// (not a batch) with the usual headers and the session's upstream is
// Streamable HTTP, ServeHTTP does not hand it to the SDK. It decodes the
// envelope only (id, method, params.name, params._meta; the arguments stay
// bytes), applies the same policy in the same order as the middleware (dead
// session, CheckProxy, allowed_tools, require_approval, ReserveUse), and
// POSTs the call on the session's own upstream session with
// upstream.Session.PostMessage — its Mcp-Session-Id, protocol version,
// credential and guarded HTTP client — under an id of the relay's
// ("vault-relay-<n>", a string: the SDK client on the same upstream session
// numbers its requests, so the two never collide). The answer (one JSON
// body, or an SSE stream read event by event) is scrubbed as bytes
// (upstream.Session.ScrubJSON, which also finds secrets written with JSON
// escapes), its id restored to the agent's, and written in the session's
// framing with the headers the SDK handler would send: SSE events flushed
// one by one, the call's progress notifications before the result. Upstream
// failures map to the same JSON-RPC errors as on the SDK path, and those
// after which the go-sdk client would give up its connection end the
// session's upstream side (dead) on the relay too. Everything else —
// initialize, tools/list (filtering and drift), resources, prompts,
// completion, ping, the GET stream, DELETE, batches, HTTP+SSE upstreams —
// stays on the SDK path. Options.DisableRelay turns the relay off;
// Proxy.ToolCalls counts the calls each path served.
//
// What the SDK abstraction does not carry through is listed in
// docs/api.md: server-to-client requests (sampling, elicitation, roots) and
// upstream list_changed notifications are not relayed (nor by the relay:
// it forwards only the call's progress notifications and its answer).
//
// Sessions are bound to their owner and server: a session id used by
// another owner, or on another server's endpoint, is a 404 exactly like an
// unknown one. Before every request the session's credential and server are
// re-read with the vault's read-your-writes barrier (app.Vault.CheckProxy),
// so a revoke, delete or expiry takes effect at the session's next request.
package mcpproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/upstream"
)

// Defaults of Options.
const (
	DefaultMaxMessageBytes     = 1 << 20
	DefaultMaxSessionsPerOwner = 32
	DefaultIdleTimeout         = 10 * time.Minute
	DefaultCallTimeout         = 5 * time.Minute
)

// Header names of the endpoint.
const (
	// HeaderCredential names the credential a new session uses (optional).
	HeaderCredential = "X-Vault-Credential-Id"
	// HeaderResponse, "json" at initialize, makes the session answer each
	// request with one JSON body instead of an SSE stream.
	HeaderResponse = "X-Vault-Response"
	// HeaderApproval carries an approval id on a tools/call request.
	HeaderApproval = "X-Vault-Approval"
	// MetaApproval is the _meta key that may carry the approval id instead
	// of the header (for clients that cannot set a header per request). It
	// is removed before the call goes upstream.
	MetaApproval = "io.mcpvault/approval"
)

// JSON-RPC error codes the endpoint answers with (besides those the
// upstream answers, which are passed through). They are in the range the
// specification leaves to implementations, clear of -32001..-32005, which
// the go-sdk's JSON-RPC layer gives meanings of its own (-32004 reads as
// "server is closing" and ends the client's session).
const (
	CodeToolNotAllowed     = -32041
	CodeApprovalRequired   = -32042
	CodeUpstream           = upstream.CodeRPCUpstream // -32043
	CodeCredentialUnusable = -32044
	CodeVaultUnavailable   = -32045
	CodeSessionLimit       = -32046
	codeInvalidRequest     = -32600
)

// Options bound what one agent can hold; zero fields take the defaults.
type Options struct {
	// MaxMessageBytes caps a POST body (413 above it).
	MaxMessageBytes int64
	// MaxSessionsPerOwner caps the open sessions of one owner.
	MaxSessionsPerOwner int
	// IdleTimeout ends a session that has had no request for this long.
	IdleTimeout time.Duration
	// CallTimeout bounds one request relayed upstream.
	CallTimeout time.Duration
	// DisableRelay sends every tools/call through the go-sdk on both sides
	// (the SDK path) instead of the raw JSON-RPC relay; for comparisons.
	DisableRelay bool
}

// Caller is who is calling and which server's endpoint: set by the HTTP
// adapter after authentication and the ownership check.
type Caller struct {
	Owner    events.Owner
	ServerID string
}

type callerKey struct{}
type pendingKey struct{}

// WithCaller returns ctx carrying c, for Proxy.ServeHTTP.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// Proxy is the http.Handler of the MCP endpoint.
type Proxy struct {
	vault  *app.Vault
	dialer *upstream.Dialer
	log    *slog.Logger
	opts   Options
	h      *mcp.StreamableHTTPHandler // answers requests as SSE streams
	hJSON  *mcp.StreamableHTTPHandler // answers requests as single JSON bodies
	bare   *mcp.Server

	mu       sync.Mutex
	sessions map[string]*session
	perOwner map[string]int
	gone     map[string]goneSession
	goneIDs  []string

	stop     chan struct{}
	stopOnce sync.Once

	relayed  atomic.Uint64 // tools/call served by the relay
	sdkCalls atomic.Uint64 // tools/call served by the SDK path
}

// ToolCalls counts the tools/call requests served so far by the relay
// (the fast path) and by the SDK path.
func (p *Proxy) ToolCalls() (relayed, sdk uint64) { return p.relayed.Load(), p.sdkCalls.Load() }

// goneSession remembers why a session ended, so that its owner gets a
// clear answer instead of a bare 404.
type goneSession struct {
	ownerKey, serverID, reason string
}

// legacyVersions are the protocol versions with sessions (initialize and
// Mcp-Session-Id); the endpoint offers only these, so that every agent has a
// session bound to its owner. Newer clients fall back to them.
var legacyVersions = func() []string {
	var out []string
	for _, v := range mcp.SupportedProtocolVersions() {
		if v <= "2025-11-25" {
			out = append(out, v)
		}
	}
	return out
}()

// New returns the endpoint's handler. Close it at shutdown.
func New(v *app.Vault, d *upstream.Dialer, log *slog.Logger, o Options) *Proxy {
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.MaxSessionsPerOwner <= 0 {
		o.MaxSessionsPerOwner = DefaultMaxSessionsPerOwner
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	p := &Proxy{vault: v, dialer: d, log: log, opts: o, sessions: map[string]*session{},
		perOwner: map[string]int{}, gone: map[string]goneSession{}, stop: make(chan struct{})}
	p.bare = mcp.NewServer(&mcp.Implementation{Name: "mcp-vault", Version: "1"},
		&mcp.ServerOptions{SupportedProtocolVersions: legacyVersions})
	for _, json := range []bool{false, true} {
		h := mcp.NewStreamableHTTPHandler(p.getServer, &mcp.StreamableHTTPOptions{
			// The vault authenticates every request with its API key; a
			// browser cannot hold one, so DNS rebinding gains nothing.
			DisableLocalhostProtection: true,
			MaxRequestBodyBytes:        o.MaxMessageBytes,
			JSONResponse:               json,
		})
		if json {
			p.hJSON = h
		} else {
			p.h = h
		}
	}
	go p.sweep()
	return p
}

// Close ends every session and stops the idle sweeper.
func (p *Proxy) Close() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.mu.Lock()
	all := make([]*session, 0, len(p.sessions))
	for _, s := range p.sessions {
		all = append(all, s)
	}
	p.mu.Unlock()
	for _, s := range all {
		s.end("shutdown")
	}
}

func (p *Proxy) getServer(r *http.Request) *mcp.Server {
	if s, ok := r.Context().Value(pendingKey{}).(*session); ok {
		return s.server
	}
	if id := r.Header.Get("Mcp-Session-Id"); id != "" {
		p.mu.Lock()
		s := p.sessions[id]
		p.mu.Unlock()
		if s != nil {
			return s.server
		}
	}
	return p.bare
}

// ServeHTTP implements http.Handler. The request's context must carry a
// Caller (WithCaller).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, ok := r.Context().Value(callerKey{}).(Caller)
	if !ok {
		writeError(w, http.StatusInternalServerError, "api_error", "The server had an error while processing the request.", "")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error",
			"The MCP endpoint accepts POST (JSON-RPC messages), GET (the session's stream) and DELETE (end the session).", "method_not_allowed")
		return
	}
	var body []byte
	if r.Method == http.MethodPost {
		var ok bool
		if body, ok = p.readBody(w, r); !ok {
			return
		}
	}
	if id := r.Header.Get("Mcp-Session-Id"); id != "" {
		s := p.lookup(id, c)
		if s == nil {
			p.notFound(w, id, c)
			return
		}
		// Only messages keep a session alive: a GET stream held open by
		// an agent that sends nothing does not.
		s.touch()
		if r.Method == http.MethodPost {
			s.inflight.Add(1)
			defer func() { s.touch(); s.inflight.Add(-1) }()
			if !s.initialized.Load() && sendsInitialized(body) {
				// The SDK server reads the notification asynchronously;
				// the relay must not wait for it to know.
				s.initialized.Store(true)
			}
			if c := s.relayable(r, body); c != nil {
				s.relay(w, r, c)
				return
			}
		}
		s.handler.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, http.StatusBadRequest, "invalid_request_error",
			"GET and DELETE need the Mcp-Session-Id header of an open session; start one with a POST of initialize.", "session_required")
		return
	}
	init, rpcID, isCall := peek(body)
	if !init {
		if !isCall {
			writeError(w, http.StatusBadRequest, "invalid_request_error",
				"No session: POST initialize first (without Mcp-Session-Id); every later message needs the session's Mcp-Session-Id header.", "session_required")
			return
		}
		writeRPCError(w, rpcID, codeInvalidRequest,
			"No session: send initialize first (without an Mcp-Session-Id header); every later message needs the session's Mcp-Session-Id header.", nil)
		return
	}
	if !p.reserve(c.Owner) {
		writeRPCError(w, rpcID, CodeSessionLimit, fmt.Sprintf(
			"session_limit: this owner already has %d open MCP sessions (the limit); end one with DELETE or let it idle out (after %s without a request).",
			p.opts.MaxSessionsPerOwner, p.opts.IdleTimeout), nil)
		return
	}
	s, rerr := p.open(r.Context(), c, r.Header.Get(HeaderCredential))
	if rerr != nil {
		p.release(c.Owner)
		writeRPCError(w, rpcID, rerr.code, rerr.msg, nil)
		return
	}
	// A session answers as SSE streams (progress notifications stream
	// through), or as single JSON bodies when the agent asked for them at
	// initialize with "X-Vault-Response: json" (notifications of a request
	// are then not delivered).
	s.handler = p.h
	if strings.EqualFold(r.Header.Get(HeaderResponse), "json") {
		s.handler = p.hJSON
	}
	s.inflight.Add(1)
	s.handler.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), pendingKey{}, s)))
	s.touch()
	s.inflight.Add(-1)
	if s.ss.Load() == nil {
		// The SDK did not start the session (a malformed initialize).
		s.end("failed")
	}
}

// readBody reads a POST body up to the message limit (413 above it).
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	tooLarge := func() ([]byte, bool) {
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error",
			fmt.Sprintf("The MCP message exceeds %d bytes.", p.opts.MaxMessageBytes), "message_too_large")
		return nil, false
	}
	if r.ContentLength > p.opts.MaxMessageBytes {
		return tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, p.opts.MaxMessageBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "The request body could not be read.", "")
		return nil, false
	}
	if int64(len(body)) > p.opts.MaxMessageBytes {
		return tooLarge()
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, true
}

// envelope is what the endpoint reads of a JSON-RPC message before the
// SDK sees it.
type envelope struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
}

// envelopes decodes a POST body (one message, or a batch) down to its
// envelopes; ok is false when it is not JSON-RPC.
func envelopes(body []byte) (msgs []envelope, ok bool) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return msgs, json.Unmarshal(trimmed, &msgs) == nil
	}
	var m envelope
	if json.Unmarshal(trimmed, &m) != nil {
		return nil, false
	}
	return []envelope{m}, true
}

// peek tells whether body is (or, in a batch, holds) an initialize request,
// the id of its first request, and whether it holds any request at all.
func peek(body []byte) (init bool, id json.RawMessage, isCall bool) {
	msgs, ok := envelopes(body)
	if !ok {
		return false, nil, false
	}
	for _, m := range msgs {
		if len(m.ID) > 0 && string(m.ID) != "null" && m.Method != "" {
			if id == nil {
				id = m.ID
			}
			isCall = true
		}
		if m.Method == "initialize" {
			init = true
			id = m.ID
		}
	}
	return init, id, isCall
}

// sendsInitialized tells whether body is (or, in a batch, holds) the
// notifications/initialized notification.
func sendsInitialized(body []byte) bool {
	if !bytes.Contains(body, []byte("notifications/initialized")) {
		return false
	}
	msgs, _ := envelopes(body)
	for _, m := range msgs {
		if m.Method == "notifications/initialized" && len(m.ID) == 0 {
			return true
		}
	}
	return false
}

// lookup returns the open session id of caller c, or nil: an unknown id and
// someone else's look the same.
func (p *Proxy) lookup(id string, c Caller) *session {
	p.mu.Lock()
	s := p.sessions[id]
	p.mu.Unlock()
	if s == nil || s.owner != c.Owner || s.serverID != c.ServerID || s.ss.Load() == nil {
		return nil
	}
	if s.inflight.Load() == 0 && time.Duration(time.Now().UnixNano()-s.lastActive.Load()) > p.opts.IdleTimeout {
		s.end("idle") // expired, not yet swept
		return nil
	}
	return s
}

func (p *Proxy) notFound(w http.ResponseWriter, id string, c Caller) {
	p.mu.Lock()
	g, ok := p.gone[id]
	p.mu.Unlock()
	if ok && g.ownerKey == c.Owner.Key() && g.serverID == c.ServerID {
		switch g.reason {
		case "idle":
			writeError(w, http.StatusNotFound, "not_found_error", fmt.Sprintf(
				"The MCP session ended after %s without a request; start a new session (POST initialize without Mcp-Session-Id).",
				p.opts.IdleTimeout), "session_expired")
			return
		case "deleted":
			writeError(w, http.StatusNotFound, "not_found_error",
				"The MCP session was ended (DELETE); start a new session (POST initialize without Mcp-Session-Id).", "session_ended")
			return
		}
	}
	writeError(w, http.StatusNotFound, "not_found_error",
		"No such MCP session; start a new session (POST initialize without Mcp-Session-Id).", "session_not_found")
}

func (p *Proxy) reserve(o events.Owner) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.perOwner[o.Key()] >= p.opts.MaxSessionsPerOwner {
		return false
	}
	p.perOwner[o.Key()]++
	return true
}

func (p *Proxy) release(o events.Owner) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.perOwner[o.Key()]--; p.perOwner[o.Key()] <= 0 {
		delete(p.perOwner, o.Key())
	}
}

// remove forgets an ended session and remembers why it ended.
func (p *Proxy) remove(s *session, reason string) {
	p.mu.Lock()
	if p.sessions[s.id] != s {
		p.mu.Unlock()
		return
	}
	delete(p.sessions, s.id)
	if p.perOwner[s.owner.Key()]--; p.perOwner[s.owner.Key()] <= 0 {
		delete(p.perOwner, s.owner.Key())
	}
	if s.ss.Load() != nil {
		p.gone[s.id] = goneSession{ownerKey: s.owner.Key(), serverID: s.serverID, reason: reason}
		p.goneIDs = append(p.goneIDs, s.id)
		if len(p.goneIDs) > 10000 {
			delete(p.gone, p.goneIDs[0])
			p.goneIDs = p.goneIDs[1:]
		}
	}
	p.mu.Unlock()
}

// sweep ends sessions idle for longer than IdleTimeout.
func (p *Proxy) sweep() {
	every := min(max(p.opts.IdleTimeout/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		var idle []*session
		p.mu.Lock()
		for _, s := range p.sessions {
			if s.inflight.Load() == 0 && time.Duration(now-s.lastActive.Load()) > p.opts.IdleTimeout {
				idle = append(idle, s)
			}
		}
		p.mu.Unlock()
		for _, s := range idle {
			s.end("idle")
		}
	}
}

// rpcError is a refusal answered before the SDK sees the message.
type rpcError struct {
	code int64
	msg  string
}

func writeRPCError(w http.ResponseWriter, id json.RawMessage, code int64, msg string, data any) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	e := map[string]any{"code": code, "message": msg}
	if data != nil {
		e["data"] = data
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": e})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// writeError answers with the vault's error body (shared/API.md).
func writeError(w http.ResponseWriter, status int, typ, msg, code string) {
	var c *string
	if code != "" {
		c = &code
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": c}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// newSessionID returns 128 random bits as 32 hex characters.
func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hostOf is host[:port] of a URL, for a use event.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
