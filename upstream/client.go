// Package upstream checks whether a credential works against a remote MCP
// server: it connects as an MCP client (Streamable HTTP, falling back to the
// older HTTP+SSE transport), initializes, and lists the tools. Every outbound
// connection goes through an SSRF guard that checks the resolved address at
// dial time, and the credential is only ever sent to the server URL's origin.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Auth is the decrypted credential to send. Type is "bearer",
// "authorization", "headers" or "none" (an empty Type means "none").
type Auth struct {
	Type          string
	BearerToken   string
	Authorization string
	Headers       map[string]string
}

// Auth types accepted in Auth.Type.
const (
	AuthBearer        = "bearer"
	AuthAuthorization = "authorization"
	AuthHeaders       = "headers"
	AuthNone          = "none"
)

// Error is a failed test's reason. Code is one of the stable Code* constants;
// Message is a human-readable sentence built from the code, the target host
// and at most an HTTP status, so it never contains a secret.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error implements the error interface.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Stable error codes reported in Result.Error.Code.
const (
	// CodeCredentialRejected: the server answered 401 or 403.
	CodeCredentialRejected = "credential_rejected"
	// CodeUnreachable: DNS failure, connection refused or reset, no route.
	CodeUnreachable = "unreachable"
	// CodeTimeout: the test did not finish within Tester.Timeout (or the
	// caller's context ended first).
	CodeTimeout = "timeout"
	// CodeTLSError: the TLS handshake or certificate verification failed.
	CodeTLSError = "tls_error"
	// CodeNotMCPServer: HTTP works but neither transport spoke MCP (wrong
	// status, content type, or protocol error).
	CodeNotMCPServer = "not_mcp_server"
	// CodeUpstreamError: the server answered only with HTTP 5xx or 429.
	CodeUpstreamError = "upstream_error"
	// CodeDestinationBlocked: the SSRF guard refused the destination (a
	// loopback, private, link-local, metadata, ... address, or an SSE
	// endpoint on another origin).
	CodeDestinationBlocked = "destination_blocked"
	// CodeInsecureTransport: a request from an https server URL would have
	// gone over plain http.
	CodeInsecureTransport = "insecure_transport"
	// CodeRedirectBlocked: a redirect to another origin, or more than three
	// redirects.
	CodeRedirectBlocked = "redirect_blocked"
	// CodeResponseTooLarge: a response body exceeded Tester.MaxResponseBytes.
	CodeResponseTooLarge = "response_too_large"
	// CodeInvalidURL: the server URL is not an absolute http(s) URL with a
	// valid host and port.
	CodeInvalidURL = "invalid_url"
	// CodeInvalidCredential: the Auth value is malformed (unknown type, empty
	// secret, or a header that cannot be sent); nothing was sent.
	CodeInvalidCredential = "invalid_credential"
)

// Result is the outcome of one Tester.Test.
type Result struct {
	// Connected is true when initialize and tools/list succeeded.
	Connected bool
	// ToolNames are the server's tool names, already filtered by the
	// allowed tools; never nil (an empty slice on failure).
	ToolNames []string
	// Error is nil when Connected, otherwise the reason.
	Error *Error
	// TargetHost is host[:port] of the server URL, for the audit event (no
	// userinfo, no path, no query).
	TargetHost string
	// Tools is the server's whole inventory (not filtered by the allowed
	// tools): tool name to ToolHash, for drift detection. Nil on failure.
	Tools map[string]string
	// CredentialSent is true when Auth.Type is not "none" and at least one
	// request carrying the credential got a connection to the server (so
	// the credential may have left this process). A destination refused by
	// the guard, or a connection that could not be opened, does not count.
	CredentialSent bool
}

// Tester runs credential tests against remote MCP servers. The zero value is
// ready to use; a Tester may be used concurrently.
type Tester struct {
	// AllowPrivate lets tests reach loopback, private, link-local and
	// metadata addresses (VAULT_ALLOW_PRIVATE_UPSTREAMS).
	AllowPrivate bool
	// Timeout bounds the whole test; 10s when zero.
	Timeout time.Duration
	// MaxResponseBytes caps each response body; 1 MiB when zero. For the
	// HTTP+SSE transport the cap applies to the whole event stream. All
	// responses of one session together are capped at 4 MiB.
	MaxResponseBytes int64
	// UserAgent is sent as User-Agent when not empty.
	UserAgent string

	// Test hooks (unexported so that production code cannot set them).
	lookup    lookupFunc  // replaces DNS resolution
	dial      dialFunc    // replaces the final dial of a checked address
	tlsConfig *tls.Config // replaces the default TLS configuration
}

const (
	defaultTimeout          = 10 * time.Second
	defaultMaxResponseBytes = 1 << 20
	// maxSessionBytes bounds all response bodies of one session together
	// (every tools/list page), whatever the per-response cap.
	maxSessionBytes = 4 << 20
	// maxToolPages, maxTools and maxToolNamesBytes bound the tool list: a
	// list beyond them is a response_too_large failure, so the test answer
	// (and the idempotency record that keeps it) stays well under the NATS
	// payload limit. maxCursorBytes bounds what the vault sends back.
	maxToolPages      = 50
	maxTools          = 1000
	maxToolNamesBytes = 64 << 10
	maxCursorBytes    = 4 << 10
	maxRedirects      = 3
	// clientProtocolVersion is sent in initialize. It is the newest version
	// that still uses the initialize handshake, which every MCP server
	// understands; servers negotiate down from it.
	clientProtocolVersion = "2025-11-25"
)

// Test connects to serverURL with auth, lists the tools and reports the
// outcome. It never returns an error: failures are in Result.Error.
// allowedTools == nil means every tool; otherwise only names in the list
// are returned.
func (t *Tester) Test(ctx context.Context, serverURL string, auth Auth, allowedTools []string) Result {
	res := Result{ToolNames: []string{}}
	u, target, fail := parseServerURL(serverURL)
	res.TargetHost = target
	if fail != nil {
		res.Error = fail
		return res
	}
	if fail := validateAuth(auth); fail != nil {
		res.Error = fail
		return res
	}
	// A literal address is judged before anything is set up; host names
	// are judged after resolution, at dial time.
	if addr, isIP, err := parseHostAddr(u.Hostname()); isIP {
		if err != nil {
			res.Error = errorf(CodeInvalidURL, "the server URL host is not a valid address")
			return res
		}
		if !t.AllowPrivate {
			if reason := blockedReason(addr); reason != "" {
				res.Error = blockedMessage(target, reason)
				return res
			}
		}
	}

	timeout := t.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	maxBytes := t.MaxResponseBytes
	if maxBytes <= 0 {
		maxBytes = defaultMaxResponseBytes
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	g := newGuard(t.AllowPrivate, timeout, t.lookup, t.dial)
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.tlsConfig != nil {
		tlsConfig = t.tlsConfig.Clone()
	}
	transport := &http.Transport{
		Proxy:                  nil, // never a proxy from the environment
		DialContext:            g.DialContext,
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    timeout,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           4,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        timeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer transport.CloseIdleConnections()

	p := &probe{
		url:       u,
		target:    target,
		origin:    originOf(u),
		auth:      auth,
		userAgent: t.UserAgent,
		maxBytes:  maxBytes,
		timeout:   timeout,
		base:      transport,
		// The whole tool list stays small, whatever the upstream sends.
		sessionBudget: maxSessionBytes,
	}
	names, tools, fail := p.session(ctx, false)
	if fail != nil && fallbackWorthy(fail) && ctx.Err() == nil {
		sseNames, sseTools, sseFail := p.session(ctx, true)
		switch {
		case sseFail == nil:
			names, tools, fail = sseNames, sseTools, nil
		case !fallbackWorthy(sseFail):
			// The SSE attempt got further (or found a sharper reason).
			fail = sseFail
		}
	}
	res.CredentialSent = p.credentialSent.Load()
	if fail != nil {
		res.Error = fail
		return res
	}
	res.Connected = true
	res.Tools = tools
	res.ToolNames = filterTools(names, allowedTools)
	return res
}

// fallbackWorthy reports whether a Streamable HTTP failure means "this is not
// a Streamable HTTP server", in which case the HTTP+SSE transport is tried.
func fallbackWorthy(e *Error) bool {
	return e.Code == CodeNotMCPServer || e.Code == CodeUpstreamError
}

func filterTools(names, allowed []string) []string {
	out := []string{}
	if allowed == nil {
		return append(out, names...)
	}
	ok := make(map[string]bool, len(allowed))
	for _, a := range allowed {
		ok[a] = true
	}
	for _, n := range names {
		if ok[n] {
			out = append(out, n)
		}
	}
	return out
}

// parseServerURL validates serverURL and returns it without userinfo or
// fragment, plus its host[:port] for the audit event.
func parseServerURL(raw string) (*url.URL, string, *Error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse errors quote the raw URL, which may hold a secret.
		return nil, "", errorf(CodeInvalidURL, "the server URL cannot be parsed")
	}
	target := u.Host
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return nil, target, errorf(CodeInvalidURL, "the server URL must be an http or https URL")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return nil, target, errorf(CodeInvalidURL, "the server URL has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, target, errorf(CodeInvalidURL, "the server URL has an invalid port")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, target, errorf(CodeInvalidURL, "the server URL has an invalid port")
	}
	if strings.Contains(u.Hostname(), "%") {
		// An IPv6 zone ("[fe80::1%25eth0]") names a local interface: never
		// a public server, and its bytes need not survive a re-encoding.
		return nil, target, blockedMessage(target, "IPv6 zone")
	}
	clean := *u
	clean.Scheme = scheme
	clean.User = nil // the credential comes from Auth only
	clean.Fragment, clean.RawFragment = "", ""
	// The URL the client sends must name the host that was checked.
	if again, err := url.Parse(clean.String()); err != nil || again.Host != clean.Host {
		return nil, target, errorf(CodeInvalidURL, "the server URL cannot be re-encoded faithfully")
	}
	return &clean, target, nil
}

// forbiddenHeaders may not be set by a "headers" credential: they are
// hop-by-hop or framing headers the HTTP stack owns, or the MCP transport's.
var forbiddenHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Upgrade": true, "Te": true, "Trailer": true, "Keep-Alive": true,
	// Headers the MCP transport owns (API.md): replacing them breaks the protocol.
	"Content-Type": true, "Accept": true, "Mcp-Session-Id": true, "Mcp-Protocol-Version": true,
	"Last-Event-Id": true,
}

func validateAuth(a Auth) *Error {
	switch a.Type {
	case "", AuthNone:
		return nil
	case AuthBearer:
		if a.BearerToken == "" || !validHeaderValue(a.BearerToken) {
			return errorf(CodeInvalidCredential, "the bearer token is empty or cannot be sent in a header")
		}
	case AuthAuthorization:
		if a.Authorization == "" || !validHeaderValue(a.Authorization) {
			return errorf(CodeInvalidCredential, "the Authorization value is empty or cannot be sent in a header")
		}
	case AuthHeaders:
		if len(a.Headers) == 0 {
			return errorf(CodeInvalidCredential, "the credential has no headers")
		}
		for name, value := range a.Headers {
			canon := http.CanonicalHeaderKey(name)
			if !validHeaderName(name) || forbiddenHeaders[canon] || strings.HasPrefix(canon, "Proxy-") {
				return errorf(CodeInvalidCredential, "a credential header name is invalid or not allowed")
			}
			if value == "" || !validHeaderValue(value) {
				return errorf(CodeInvalidCredential, "a credential header value is empty or cannot be sent")
			}
		}
	default:
		return errorf(CodeInvalidCredential, "unknown credential type")
	}
	return nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' || c == '\n' || c == 0 || (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// origin is scheme + host + port, with default ports made explicit.
type origin struct{ scheme, host, port string }

func originOf(u *url.URL) origin {
	o := origin{
		scheme: strings.ToLower(u.Scheme),
		host:   strings.ToLower(strings.TrimSuffix(u.Hostname(), ".")),
		port:   u.Port(),
	}
	if o.port == "" {
		switch o.scheme {
		case "https":
			o.port = "443"
		case "http":
			o.port = "80"
		}
	}
	return o
}

// probe holds what the attempts of one Test share.
type probe struct {
	url       *url.URL
	target    string
	origin    origin
	auth      Auth
	userAgent string
	maxBytes  int64
	timeout   time.Duration
	base      http.RoundTripper
	// streamMaxBytes, when set, caps a GET's event stream (the long-lived
	// stream of an HTTP+SSE session) instead of maxBytes.
	streamMaxBytes int64
	// sessionBudget, when set, caps the bytes of all of a session's
	// responses together (a test's tool list must stay small whatever the
	// upstream sends; a proxy session has no such cap).
	sessionBudget int64

	credentialSent atomic.Bool
}

// connect opens one MCP client session with client over Streamable HTTP
// (sse=false) or HTTP+SSE (sse=true). Every request of the session ends when
// life ends. On failure it returns the classified reason.
func (p *probe) connect(ctx, life context.Context, sse bool, client *mcp.Client) (*mcp.ClientSession, *attempt, *Error) {
	a := &attempt{probe: p, testCtx: life}
	if p.sessionBudget > 0 {
		a.budget = new(atomic.Int64)
		a.budget.Store(p.sessionBudget)
	}
	httpClient := &http.Client{Transport: a, CheckRedirect: a.checkRedirect}
	a.client = httpClient
	var transport mcp.Transport
	if sse {
		transport = &mcp.SSEClientTransport{Endpoint: p.url.String(), HTTPClient: httpClient}
	} else {
		transport = &mcp.StreamableClientTransport{
			Endpoint:             p.url.String(),
			HTTPClient:           httpClient,
			MaxRetries:           -1,   // neither a probe nor a proxy session reconnects
			DisableStandaloneSSE: true, // only messages related to a request are needed
		}
	}
	cs, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: clientProtocolVersion})
	if err != nil {
		return nil, a, a.outcome()
	}
	return cs, a, nil
}

// session runs one MCP session over Streamable HTTP (sse=false) or HTTP+SSE
// (sse=true) and returns the tool names in the server's order and the tools
// (name to ToolHash), or the classified failure.
func (p *probe) session(ctx context.Context, sse bool) ([]string, map[string]string, *Error) {
	client := mcp.NewClient(
		&mcp.Implementation{Name: "mcpvault-upstream-test", Version: "1.0.0"},
		&mcp.ClientOptions{Capabilities: &mcp.ClientCapabilities{}},
	)
	cs, a, fail := p.connect(ctx, ctx, sse, client)
	if fail != nil {
		return nil, nil, fail
	}
	defer cs.Close()
	if init := cs.InitializeResult(); init == nil || init.Capabilities == nil || init.Capabilities.Tools == nil {
		// The server offers no tools; the session itself worked.
		return []string{}, map[string]string{}, nil
	}
	names := []string{}
	tools := map[string]string{}
	seenCursors := map[string]bool{}
	cursor := ""
	namesBytes := 0
	for pages := 0; ; pages++ {
		if pages == maxToolPages {
			return nil, nil, a.tooManyTools("more than %d pages", maxToolPages)
		}
		page, err := cs.ListTools(ctx, &mcp.ListToolsParams{Cursor: cursor})
		if err != nil {
			return nil, nil, a.outcome()
		}
		for _, tool := range page.Tools {
			if tool == nil {
				continue
			}
			if _, seen := tools[tool.Name]; seen {
				continue
			}
			if len(names) == maxTools {
				return nil, nil, a.tooManyTools("more than %d tools", maxTools)
			}
			namesBytes += len(tool.Name)
			if namesBytes > maxToolNamesBytes {
				return nil, nil, a.tooManyTools("more than %d bytes of tool names", maxToolNamesBytes)
			}
			tools[tool.Name] = ToolHash(tool)
			names = append(names, tool.Name)
		}
		if page.NextCursor == "" || seenCursors[page.NextCursor] {
			break
		}
		if len(page.NextCursor) > maxCursorBytes {
			return nil, nil, a.tooManyTools("a cursor of more than %d bytes", maxCursorBytes)
		}
		seenCursors[page.NextCursor] = true
		cursor = page.NextCursor
	}
	return names, tools, nil
}

// tooManyTools is the failure of a tool list over the vault's bounds: the
// answer, and the idempotency record that keeps it, must stay small whatever
// the upstream sends.
func (a *attempt) tooManyTools(format string, args ...any) *Error {
	return errorf(CodeResponseTooLarge, "the tool list of %s exceeds the vault's limits (%s)", a.target, fmt.Sprintf(format, args...))
}

// attempt is the http.RoundTripper of one session. It injects the
// credential, enforces the origin, HTTPS and size rules, and records what
// went wrong, because the MCP SDK flattens most errors into strings.
type attempt struct {
	*probe
	testCtx context.Context
	// budget is what is left of the probe's sessionBudget for this
	// session's bodies (nil: no budget, as for a proxy session).
	budget *atomic.Int64
	// client is the HTTP client the session's transport uses (the relay
	// of a proxy session sends with it too).
	client *http.Client

	mu          sync.Mutex
	failure     *Error      // first decisive failure
	last        *Error      // latest decisive failure (long-lived sessions)
	abandoned   atomic.Bool // send nothing more (the credential may no longer be used)
	established atomic.Bool // the handshake is over (a proxy session in use)
	sawResponse bool        // some HTTP response arrived
	badStatus   int         // last non-2xx status
}

func (a *attempt) record(e *Error) {
	a.mu.Lock()
	if a.failure == nil {
		a.failure = e
	}
	a.last = e
	a.mu.Unlock()
}

// lastFailure is the latest decisive failure, or the context's.
func (a *attempt) lastFailure() *Error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last != nil {
		return a.last
	}
	return a.contextError()
}

// checkTarget enforces that requests only go to the server URL's origin and
// never downgrade from https.
func (a *attempt) checkTarget(u *url.URL, redirect bool) *Error {
	if a.origin.scheme == "https" && !strings.EqualFold(u.Scheme, "https") {
		return errorf(CodeInsecureTransport, "refused to continue from https://%s over plain http", a.target)
	}
	if originOf(u) != a.origin {
		if redirect {
			return errorf(CodeRedirectBlocked, "%s redirected to another origin; not followed", a.target)
		}
		return errorf(CodeDestinationBlocked, "%s pointed the client to another origin; refused", a.target)
	}
	return nil
}

func (a *attempt) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		e := errorf(CodeRedirectBlocked, "%s redirected more than %d times", a.target, maxRedirects)
		a.record(e)
		return e
	}
	if e := a.checkTarget(req.URL, true); e != nil {
		a.record(e)
		return e
	}
	return nil
}

func (a *attempt) inject(h http.Header) {
	switch a.auth.Type {
	case AuthBearer:
		h.Set("Authorization", "Bearer "+a.auth.BearerToken)
	case AuthAuthorization:
		h.Set("Authorization", a.auth.Authorization)
	case AuthHeaders:
		for name, value := range a.auth.Headers {
			h.Set(name, value)
		}
	}
	if a.userAgent != "" {
		h.Set("User-Agent", a.userAgent)
	}
}

// RoundTrip implements http.RoundTripper.
func (a *attempt) RoundTrip(req *http.Request) (*http.Response, error) {
	if a.abandoned.Load() {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errorf(CodeInvalidCredential, "the session was abandoned; nothing more is sent to %s", a.target)
	}
	if e := a.checkTarget(req.URL, false); e != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		a.record(e)
		return nil, e
	}
	// Every request ends when the test ends, even those the SDK starts on a
	// context detached from the one passed to Connect.
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(a.testCtx, cancel)
	release := func() { stop(); cancel() }
	if a.auth.Type != "" && a.auth.Type != AuthNone {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { a.credentialSent.Store(true) },
		})
	}
	out := req.Clone(ctx)
	a.inject(out.Header)

	resp, err := a.base.RoundTrip(out)
	if err != nil {
		release()
		e := a.classifyTransportError(err)
		a.record(e)
		return nil, e // scrubbed: the raw error never reaches the SDK
	}
	a.mu.Lock()
	a.sawResponse = true
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		a.badStatus = resp.StatusCode
	}
	a.mu.Unlock()
	switch status := resp.StatusCode; {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		a.record(errorf(CodeCredentialRejected, "%s rejected the credential (HTTP %d)", a.target, status))
	case !a.established.Load():
		// During a test or a handshake the statuses are judged together
		// (outcome).
	case status == http.StatusNotFound && req.Header.Get("Mcp-Session-Id") != "":
		a.record(errorf(CodeUpstreamError, "%s no longer knows the upstream session (HTTP 404); start a new session", a.target))
	case status >= 500 || status == http.StatusTooManyRequests:
		a.record(errorf(CodeUpstreamError, "%s answered HTTP %d", a.target, status))
	case status >= 400:
		a.record(errorf(CodeNotMCPServer, "%s did not answer as an MCP server (HTTP %d)", a.target, status))
	}
	limit := a.maxBytes
	if a.streamMaxBytes > 0 && req.Method == http.MethodGet {
		limit = a.streamMaxBytes
	}
	tooLarge := errorf(CodeResponseTooLarge, "a response from %s exceeded %d bytes", a.target, limit)
	if resp.ContentLength > limit {
		resp.Body.Close()
		release()
		a.record(tooLarge)
		return nil, tooLarge
	}
	resp.Body = &limitedBody{
		rc:              resp.Body,
		remaining:       limit,
		budget:          a.budget,
		tooLarge:        tooLarge,
		sessionTooLarge: errorf(CodeResponseTooLarge, "the responses from %s exceeded %d bytes in total", a.target, maxSessionBytes),
		exceeded:        a.record,
		release:         release,
	}
	return resp, nil
}

// outcome classifies a failed session from what the round trips observed.
func (a *attempt) outcome() *Error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failure != nil {
		return a.failure
	}
	if e := a.contextError(); e != nil {
		return e
	}
	if a.sawResponse {
		switch s := a.badStatus; {
		case s >= 500 || s == http.StatusTooManyRequests:
			return errorf(CodeUpstreamError, "%s answered HTTP %d", a.target, s)
		case s != 0:
			return errorf(CodeNotMCPServer, "%s did not answer as an MCP server (HTTP %d)", a.target, s)
		}
		return errorf(CodeNotMCPServer, "%s did not answer as an MCP server", a.target)
	}
	return errorf(CodeUnreachable, "could not connect to %s", a.target)
}

func (a *attempt) contextError() *Error {
	switch err := a.testCtx.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(CodeTimeout, "%s did not complete the test within %s", a.target, a.timeout)
	case err != nil:
		return errorf(CodeTimeout, "the test of %s was cancelled", a.target)
	}
	return nil
}

// limitedBody fails reads past the cap, or past the session's budget shared
// by all bodies, with a response_too_large error.
type limitedBody struct {
	rc              io.ReadCloser
	remaining       int64
	budget          *atomic.Int64
	tooLarge        *Error
	sessionTooLarge *Error
	exceeded        func(*Error)
	release         func()
	once            sync.Once
	failed          *Error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.failed != nil {
		return 0, b.failed
	}
	if int64(len(p)) > b.remaining+1 {
		p = p[:b.remaining+1]
	}
	n, err := b.rc.Read(p)
	b.remaining -= int64(n)
	left := int64(0)
	if b.budget != nil {
		left = b.budget.Add(-int64(n))
	}
	switch {
	case b.remaining < 0:
		b.failed = b.tooLarge
	case left < 0:
		b.failed = b.sessionTooLarge
	default:
		return n, err
	}
	b.exceeded(b.failed)
	return max(n-1, 0), b.failed
}

func (b *limitedBody) Close() error {
	err := b.rc.Close()
	b.once.Do(b.release)
	return err
}

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func blockedMessage(target, reason string) *Error {
	return errorf(CodeDestinationBlocked, "%s is not a public address (%s); outbound connections to it are not allowed", target, reason)
}
