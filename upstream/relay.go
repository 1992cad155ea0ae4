package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// The relay: the vault's MCP endpoint sends a tools/call to a Streamable
// HTTP session as bytes (PostMessage) instead of through Client, the SDK's
// session, which keeps serving everything else on the same upstream
// session. Both share the session id, the protocol version, the credential
// and the guarded HTTP client; the relay's request ids are strings
// ("vault-relay-<n>") and the SDK client's are numbers, so the two never
// collide on the upstream session.

// Relayable reports whether PostMessage may carry this session's requests:
// a Streamable HTTP session whose protocol version has no per-message
// headers (the MCP-Method/MCP-Name headers of 2026-07-28 and later would
// have to be derived from each message).
func (s *Session) Relayable() bool {
	return s.Transport == "streamable" && s.att != nil && s.att.client != nil &&
		s.protocolVersion != "" && s.protocolVersion < "2026-07-28"
}

// NextRelayID returns a JSON-RPC id (a JSON string) unique in this session
// and distinct from every id the SDK client sends (those are numbers).
func (s *Session) NextRelayID() []byte {
	b := make([]byte, 0, 32)
	b = append(b, `"vault-relay-`...)
	b = strconv.AppendUint(b, s.relayIDs.Add(1), 10)
	return append(b, '"')
}

// PostError is a relayed request that got no usable answer.
type PostError struct {
	// RPC is the error for the agent, built as CallError builds it (an
	// upstream JSON-RPC error keeps its code and its scrubbed message; a
	// transport failure is CodeRPCUpstream with a classified message).
	RPC *jsonrpc.Error
	// Broken is true when the go-sdk client would have failed the whole
	// connection on this answer (the session is gone upstream, the
	// credential was rejected, the answer is not MCP): the vault session
	// can no longer reach the upstream.
	Broken bool
}

// PostMessage sends one JSON-RPC message on the session as the SDK's
// Streamable HTTP client transport does — the session's Mcp-Session-Id and
// Mcp-Protocol-Version, the credential, through the same guarded client
// (origin pinning, no https downgrade, bounded redirects and response
// size) — and returns the response, whose body (application/json or
// text/event-stream, size-capped) the caller reads and closes. A non-2xx
// answer, a transport failure or another content type is a PostError,
// classified as the SDK client classifies it.
func (s *Session) PostMessage(ctx context.Context, body []byte) (*http.Response, *PostError) {
	resp, err := s.post(ctx, body)
	if err != nil {
		// The request did not get an answer; the SDK client keeps the
		// connection for the next request (ErrRejected).
		return nil, &PostError{RPC: s.CallError(ctx, err)}
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if ct == "application/json" || ct == "text/event-stream" {
			return resp, nil
		}
		resp.Body.Close()
		return nil, s.failed(errorf(CodeNotMCPServer, "%s answered a request with an unsupported content type", s.TargetHost), true)
	}
	defer resp.Body.Close()
	status := resp.StatusCode
	if status == http.StatusInternalServerError || status == http.StatusBadGateway || status == http.StatusServiceUnavailable ||
		status == http.StatusGatewayTimeout || status == http.StatusTooManyRequests {
		return nil, s.failed(errorf(CodeUpstreamError, "%s answered HTTP %d", s.TargetHost, status), false)
	}
	// A JSON-RPC error in the body is the upstream's answer to this request.
	if raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); err == nil {
		var msg struct {
			Error *struct {
				Code    int64  `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &msg) == nil && msg.Error != nil {
			return nil, &PostError{RPC: &jsonrpc.Error{Code: msg.Error.Code, Message: s.Scrub(msg.Error.Message)}}
		}
	}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return nil, s.failed(errorf(CodeCredentialRejected, "%s rejected the credential (HTTP %d)", s.TargetHost, status), true)
	case status == http.StatusNotFound && s.sessionID != "":
		return nil, s.failed(errorf(CodeUpstreamError, "%s no longer knows the upstream session (HTTP 404); start a new session", s.TargetHost), true)
	}
	return nil, s.failed(errorf(CodeNotMCPServer, "%s did not answer as an MCP server (HTTP %d)", s.TargetHost, status), true)
}

// failed records e as the session's latest failure (so that CallError
// reports it too) and returns it for the agent.
func (s *Session) failed(e *Error, broken bool) *PostError {
	s.att.record(e)
	return &PostError{RPC: &jsonrpc.Error{Code: CodeRPCUpstream, Message: e.Code + ": " + e.Message}, Broken: broken}
}

// ReadError is CallError for a failure while reading a relayed answer's
// body (ctx is the request's): a size cap or a broken connection.
func (s *Session) ReadError(ctx context.Context, err error) *jsonrpc.Error {
	var own *Error
	if errors.As(err, &own) {
		return &jsonrpc.Error{Code: CodeRPCUpstream, Message: own.Code + ": " + own.Message}
	}
	return s.CallError(ctx, err)
}

// Malformed is the failure of an answer that is not a JSON-RPC message;
// the go-sdk client fails its connection on one, so the caller treats the
// session as broken.
func (s *Session) Malformed() *jsonrpc.Error {
	return s.failed(errorf(CodeNotMCPServer, "%s answered with a message that is not JSON-RPC", s.TargetHost), true).RPC
}

// NoAnswer is the failure of an answer stream that ended without the
// response.
func (s *Session) NoAnswer() *jsonrpc.Error {
	return s.failed(errorf(CodeUpstreamError, "%s ended its answer without a response", s.TargetHost), false).RPC
}

// Notify POSTs one JSON-RPC notification on the session (best effort:
// the answer is discarded).
func (s *Session) Notify(ctx context.Context, body []byte) {
	resp, err := s.post(ctx, body)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// post sends body with the headers of the SDK's Streamable HTTP client
// (the credential is added by the session's RoundTripper).
func (s *Session) post(ctx context.Context, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	h := req.Header
	h["Content-Type"] = []string{"application/json"}
	h["Accept"] = []string{"application/json, text/event-stream"}
	h["Mcp-Protocol-Version"] = []string{s.protocolVersion}
	if s.sessionID != "" {
		h["Mcp-Session-Id"] = []string{s.sessionID}
	}
	return s.att.client.Do(req)
}
