package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Dialer opens long-lived MCP client sessions for the vault's MCP endpoint,
// with the same rules as Tester: the SSRF guard at dial time, the credential
// only ever sent to the server URL's origin, no https downgrade, bounded
// redirects and response sizes, Streamable HTTP first and HTTP+SSE as the
// fallback. The zero value is ready to use; a Dialer may be used concurrently.
type Dialer struct {
	// AllowPrivate lets sessions reach loopback, private, link-local and
	// metadata addresses (VAULT_ALLOW_PRIVATE_UPSTREAMS).
	AllowPrivate bool
	// ConnectTimeout bounds the handshake (connect, initialize); 10s when zero.
	ConnectTimeout time.Duration
	// MaxResponseBytes caps each response body (a JSON answer or one POST's
	// event stream); 16 MiB when zero. The long-lived event stream of an
	// HTTP+SSE session is capped at 16 times as much, after which the
	// session ends and the agent opens a new one.
	MaxResponseBytes int64
	// UserAgent is sent as User-Agent when not empty.
	UserAgent string

	lookup    lookupFunc
	dial      dialFunc
	tlsConfig *tls.Config
}

// Session is one upstream MCP session opened by a Dialer.
type Session struct {
	// Client is the SDK session; its requests carry the credential.
	Client *mcp.ClientSession
	// TargetHost is host[:port] of the server URL (no userinfo, path or query).
	TargetHost string
	// Transport is "streamable" or "sse".
	Transport string

	att     *attempt
	stop    context.CancelFunc
	base    *http.Transport
	secrets []string

	// What the relay (PostMessage) sends besides the credential.
	endpoint, sessionID, protocolVersion string
	relayIDs                             atomic.Uint64
}

// Dial connects client to serverURL with auth and initializes. Failures are
// classified and never carry a secret.
func (d *Dialer) Dial(ctx context.Context, serverURL string, auth Auth, client *mcp.Client) (*Session, *Error) {
	u, target, fail := parseServerURL(serverURL)
	if fail != nil {
		return nil, fail
	}
	if fail := validateAuth(auth); fail != nil {
		return nil, fail
	}
	if addr, isIP, err := parseHostAddr(u.Hostname()); isIP {
		if err != nil {
			return nil, errorf(CodeInvalidURL, "the server URL host is not a valid address")
		}
		if !d.AllowPrivate {
			if reason := blockedReason(addr); reason != "" {
				return nil, blockedMessage(target, reason)
			}
		}
	}
	timeout := d.ConnectTimeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	maxBytes := d.MaxResponseBytes
	if maxBytes <= 0 {
		maxBytes = 16 << 20
	}
	g := newGuard(d.AllowPrivate, timeout, d.lookup, d.dial)
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if d.tlsConfig != nil {
		tlsConfig = d.tlsConfig.Clone()
	}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            g.DialContext,
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    timeout,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           16,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	p := &probe{url: u, target: target, origin: originOf(u), auth: auth, userAgent: d.UserAgent,
		maxBytes: maxBytes, streamMaxBytes: 16 * maxBytes, timeout: timeout, base: transport}
	// The session lives on after Dial returns (an HTTP+SSE session's event
	// stream is opened with the handshake's context), so the handshake runs
	// on the session's own context, bounded by a timer and by ctx.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	timer := time.AfterFunc(timeout, stop)
	unwatch := context.AfterFunc(ctx, stop)
	kind := "streamable"
	cs, a, fail := p.connect(life, life, false, client)
	if fail != nil && fallbackWorthy(fail) && life.Err() == nil {
		var sseFail *Error
		cs, a, sseFail = p.connect(life, life, true, client)
		kind = "sse"
		if sseFail != nil && fallbackWorthy(sseFail) {
			sseFail = fail
		}
		fail = sseFail
	}
	handshakeOver := timer.Stop() && unwatch()
	if fail == nil && !handshakeOver {
		_ = cs.Close()
		fail = errorf(CodeTimeout, "%s did not complete the handshake within %s", target, timeout)
	}
	if fail != nil {
		stop()
		transport.CloseIdleConnections()
		return nil, fail
	}
	a.established.Store(true)
	out := &Session{Client: cs, TargetHost: target, Transport: kind, att: a, stop: stop, base: transport,
		secrets: secretsOf(auth), endpoint: p.url.String(), sessionID: cs.ID()}
	if ir := cs.InitializeResult(); ir != nil {
		out.protocolVersion = ir.ProtocolVersion
	}
	return out, nil
}

// Close ends the upstream session and every request still open in it.
func (s *Session) Close() error {
	err := s.Client.Close()
	s.stop()
	s.base.CloseIdleConnections()
	return err
}

// Abandon closes the session without sending anything more upstream (not
// even the session's DELETE): for a credential that may no longer be used.
func (s *Session) Abandon() {
	s.att.abandoned.Store(true)
	_ = s.Close()
}

// CallError turns the error of a request sent through the session into one
// that is safe to show the agent: a JSON-RPC error answered by the upstream
// keeps its code and its message with every secret of the credential
// replaced by "[REDACTED]"; anything else becomes the classified transport
// failure (never the raw error text, which may quote URLs or headers).
func (s *Session) CallError(ctx context.Context, err error) *jsonrpc.Error {
	var rpc *jsonrpc.Error
	if errors.As(err, &rpc) && !sdkSentinel(rpc) {
		return &jsonrpc.Error{Code: rpc.Code, Message: s.Scrub(rpc.Message)}
	}
	if ctx.Err() != nil {
		return &jsonrpc.Error{Code: CodeRPCUpstream, Message: "timeout: the upstream request did not finish in time or was cancelled"}
	}
	e := s.att.lastFailure()
	if e == nil {
		e = errorf(CodeUnreachable, "the request to %s failed", s.TargetHost)
	}
	return &jsonrpc.Error{Code: CodeRPCUpstream, Message: e.Code + ": " + e.Message}
}

// CodeRPCUpstream is the JSON-RPC error code of a request the upstream
// server could not answer (transport failure, timeout, rejected credential).
const CodeRPCUpstream = -32043

// HasSecrets reports whether the session's credential sends any value
// worth redacting (false for "none").
func (s *Session) HasSecrets() bool { return len(s.secrets) > 0 }

// Scrub replaces every secret of the session's credential in text.
func (s *Session) Scrub(text string) string { return scrub(text, s.secrets) }

// ScrubBytes replaces every secret of the session's credential in b (JSON),
// returning b itself when none occurs.
func (s *Session) ScrubBytes(b []byte) ([]byte, bool) {
	found := false
	for _, sec := range s.secrets {
		if strings.Contains(string(b), sec) {
			found = true
			break
		}
	}
	if !found {
		return b, false
	}
	return []byte(scrub(string(b), s.secrets)), true
}

// Redacted is what replaces a secret in text shown to the agent.
const Redacted = "[REDACTED]"

func scrub(text string, secrets []string) string {
	for _, sec := range secrets {
		text = strings.ReplaceAll(text, sec, Redacted)
	}
	return text
}

// secretsOf lists the values a credential sends (each at least 4 bytes,
// shorter values are too common to redact usefully), longest first so that
// no secret is left half-replaced inside another.
func secretsOf(a Auth) []string {
	var out []string
	add := func(v string) {
		v = strings.TrimSpace(v)
		if len(v) >= 4 {
			out = append(out, v)
		}
	}
	switch a.Type {
	case AuthBearer:
		add(a.BearerToken)
	case AuthAuthorization:
		add(a.Authorization)
		if _, tok, ok := strings.Cut(a.Authorization, " "); ok {
			add(tok)
		}
	case AuthHeaders:
		for _, v := range a.Headers {
			add(v)
		}
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && len(out[j]) > len(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// sdkSentinel reports whether e is one of the go-sdk's own transport
// errors (its jsonrpc2 ErrRejected, "rejected by transport", for an HTTP
// 500, 502, 503, 504 or 429, and ErrServerClosing), which are failures of
// the transport and not the upstream's answer: passed on, -32004 would even
// end the agent's session.
func sdkSentinel(e *jsonrpc.Error) bool {
	return e.Code == -32005 && e.Message == "rejected by transport" ||
		e.Code == -32004 && e.Message == "server is closing"
}
