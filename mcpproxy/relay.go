package mcpproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// The relay is the fast path of tools/call (see the package comment): the
// request's envelope is decoded, the policy applied exactly as the
// middleware applies it, and the call goes upstream as bytes on the
// session's own upstream session; the answer comes back as bytes, its id
// restored and every secret scrubbed, framed as the session answers (an
// SSE stream or one JSON body).

// callRequest is the part of a tools/call the vault reads; the arguments
// stay bytes.
type callRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  *struct {
		Name      string                     `json:"name"`
		Arguments json.RawMessage            `json:"arguments"`
		Meta      map[string]json.RawMessage `json:"_meta"`
	} `json:"params"`
}

// upMessage is the part of a message from the upstream the vault reads.
type upMessage struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int64  `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// relayable decodes body when it is a single tools/call the relay can
// carry for this request; nil means the SDK path handles it (including
// every malformed or unusual request, which the SDK answers as it always
// does).
func (s *session) relayable(r *http.Request, body []byte) *callRequest {
	if s.p.opts.DisableRelay || !s.up.Relayable() || !s.initialized.Load() || !bytes.Contains(body, []byte("tools/call")) {
		return nil
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		return nil
	}
	accept := strings.Join(r.Header.Values("Accept"), ",")
	if !strings.Contains(accept, "application/json") || !strings.Contains(accept, "text/event-stream") ||
		len(r.Header.Values("Last-Event-ID")) > 0 {
		return nil
	}
	if v := r.Header.Get("Mcp-Protocol-Version"); v != "" && !slices.Contains(legacyVersions, v) {
		return nil
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil // a batch, or not JSON-RPC
	}
	var c callRequest
	if json.Unmarshal(trimmed, &c) != nil || c.JSONRPC != "2.0" || c.Method != "tools/call" ||
		!validID(c.ID) || c.Params == nil || c.Params.Name == "" {
		return nil
	}
	return &c
}

// validID accepts the ids the go-sdk accepts from a client: a string or an
// integer.
func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return false
	}
	if id[0] == '"' {
		return true // json.Unmarshal checked it is a whole string
	}
	_, err := strconv.ParseInt(string(id), 10, 64)
	return err == nil
}

// relay serves one tools/call on the fast path; c is from relayable.
func (s *session) relay(w http.ResponseWriter, r *http.Request, c *callRequest) {
	s.p.relayed.Add(1)
	out := &agentWriter{w: w, json: s.handler == s.p.hJSON, id: c.ID}
	ctx := r.Context()
	if e := s.dead.Load(); e != nil {
		out.fail(e)
		return
	}
	chk, err := s.p.vault.CheckProxy(ctx, s.owner, s.serverID, s.cred.ID, s.check.Load())
	if err != nil {
		out.fail(s.refuse(err).(*jsonrpc.Error))
		return
	}
	s.check.Store(chk)
	srv := chk.Server()
	p := c.Params
	if !allowed(srv.AllowedTools, p.Name) {
		out.fail(&jsonrpc.Error{Code: CodeToolNotAllowed, Message: fmt.Sprintf(
			"tool_not_allowed: %q is not in this server's allowed_tools; the vault did not send the call upstream.", p.Name)})
		return
	}
	approval := ""
	if raw, ok := p.Meta[MetaApproval]; ok {
		_ = json.Unmarshal(raw, &approval)
		delete(p.Meta, MetaApproval)
	}
	if h := r.Header.Get(HeaderApproval); h != "" {
		approval = h
	}
	if srv.RequireApproval == domain.RequireAlways {
		if err := s.approve(approval, &mcp.CallToolParamsRaw{Name: p.Name, Arguments: p.Arguments}); err != nil {
			out.fail(err.(*jsonrpc.Error))
			return
		}
	}
	var slot *app.UseSlot
	if s.cred.ID != "" {
		if slot, err = s.p.vault.ReserveUse(ctx); err != nil {
			out.fail(&jsonrpc.Error{Code: CodeVaultUnavailable, Message: "use_backlog: " + err.Error()})
			return
		}
	}
	var progressKey string
	if raw, ok := p.Meta["progressToken"]; ok && !out.json {
		var tok any
		if json.Unmarshal(raw, &tok) == nil && tok != nil {
			progressKey = fmt.Sprint(tok)
		}
	}
	upID := s.up.NextRelayID()
	msg := callMessage(upID, p.Name, p.Arguments, p.Meta)

	cctx, cancel := context.WithTimeout(ctx, s.p.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	result, rerr := s.forward(cctx, msg, upID, progressKey, out)
	latency := time.Since(start)
	use := events.CredentialUsed{Operation: "tools/call", Outcome: "ok", ToolName: p.Name,
		TargetHost: s.up.TargetHost, LatencyMS: float64(latency.Microseconds()) / 1000}
	if rerr != nil {
		use.Outcome, use.ErrorCode = "failed", rpcErrorCode(rerr)
		if cctx.Err() != nil {
			s.cancelUpstream(upID)
		}
	} else if isToolError(result) {
		use.Outcome = "tool_error"
	}
	if slot != nil {
		slot.Record(s.cred, use, start)
	}
	if rerr != nil {
		out.fail(rerr)
		return
	}
	out.result(result)
}

// callMessage is the tools/call sent upstream: the SDK path's params
// (name, arguments as the agent sent them, _meta without the approval)
// under the relay's id.
func callMessage(id []byte, name string, args json.RawMessage, meta map[string]json.RawMessage) []byte {
	b := make([]byte, 0, 96+len(name)+len(args))
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, id...)
	b = append(b, `,"method":"tools/call","params":{`...)
	if len(meta) > 0 {
		b = append(b, `"_meta":{`...)
		for i, k := range slices.Sorted(mapsKeys(meta)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = append(b, meta[k]...)
		}
		b = append(b, "},"...)
	}
	b = append(b, `"name":`...)
	b = appendJSONString(b, name)
	if len(args) > 0 {
		b = append(b, `,"arguments":`...)
		b = append(b, args...)
	}
	return append(b, "}}"...)
}

func mapsKeys(m map[string]json.RawMessage) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// forward posts msg upstream and reads the answer: progress notifications
// of the call go to the agent as they arrive (SSE sessions), the result
// comes back scrubbed. A failure is the agent's JSON-RPC error, mapped as
// the SDK path maps it (upstream.Session.CallError); one after which the
// go-sdk client would have given up the connection ends the session's
// upstream side.
func (s *session) forward(ctx context.Context, msg, upID []byte, progressKey string, out *agentWriter) (json.RawMessage, *jsonrpc.Error) {
	resp, perr := s.up.PostMessage(ctx, msg)
	if perr != nil {
		if perr.Broken {
			s.dead.CompareAndSwap(nil, perr.RPC)
		}
		return nil, perr.RPC
	}
	defer resp.Body.Close()
	var final *upMessage
	handle := func(data []byte) (bool, *jsonrpc.Error) {
		var m upMessage
		if json.Unmarshal(data, &m) != nil {
			return true, s.broken(s.up.Malformed())
		}
		switch {
		case m.Method == "" && len(m.ID) > 0:
			if !sameID(m.ID, upID) {
				return false, nil // not this call's answer
			}
			final = &m
			return true, nil
		case m.Method == "notifications/progress" && progressKey != "":
			var pp struct {
				ProgressToken any `json:"progressToken"`
			}
			if json.Unmarshal(m.Params, &pp) == nil && pp.ProgressToken != nil && fmt.Sprint(pp.ProgressToken) == progressKey {
				params, _ := s.up.ScrubJSON(m.Params)
				out.progress(params)
			}
		}
		// Other notifications and server-to-client requests are not
		// relayed (as on the SDK path).
		return false, nil
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if ct == "application/json" {
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, s.up.ReadError(ctx, err)
		}
		if _, rerr := handle(data); rerr != nil {
			return nil, rerr
		}
	} else {
		err := readEvents(resp.Body, func(data []byte) (bool, *jsonrpc.Error) { return handle(data) })
		if err != nil {
			var rpc *jsonrpc.Error
			if errors.As(err, &rpc) {
				return nil, rpc
			}
			if final == nil {
				return nil, s.up.ReadError(ctx, err)
			}
		}
	}
	if final == nil {
		if ctx.Err() != nil {
			return nil, s.up.CallError(ctx, ctx.Err())
		}
		return nil, s.up.NoAnswer()
	}
	if final.Error != nil {
		// As on the SDK path: the upstream's error with its secrets
		// scrubbed, except the go-sdk's own transport sentinels (-32004
		// would end the agent's session), which are classified instead.
		return nil, s.up.CallError(ctx, &jsonrpc.Error{Code: final.Error.Code, Message: final.Error.Message})
	}
	if len(final.Result) == 0 || string(final.Result) == "null" {
		return nil, s.broken(s.up.Malformed())
	}
	res, _ := s.up.ScrubJSON(final.Result)
	return res, nil
}

// broken marks the session's upstream side unusable with e and returns e.
func (s *session) broken(e *jsonrpc.Error) *jsonrpc.Error {
	s.dead.CompareAndSwap(nil, e)
	return e
}

// cancelUpstream tells the upstream that the vault gave up on a call (as
// the SDK client does when a call's context ends).
func (s *session) cancelUpstream(upID []byte) {
	if s.dead.Load() != nil {
		return
	}
	msg := make([]byte, 0, 128)
	msg = append(msg, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":`...)
	msg = append(msg, upID...)
	msg = append(msg, `,"reason":"the vault's call ended"}}`...)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.up.Notify(ctx, msg)
	}()
}

func sameID(got, want []byte) bool {
	if bytes.Equal(got, want) {
		return true
	}
	var a, b string
	return json.Unmarshal(got, &a) == nil && json.Unmarshal(want, &b) == nil && a == b
}

// isToolError reads result.isError.
func isToolError(result json.RawMessage) bool {
	if !bytes.Contains(result, []byte(`"isError"`)) {
		return false
	}
	var r struct {
		IsError bool `json:"isError"`
	}
	return json.Unmarshal(result, &r) == nil && r.IsError
}

// readEvents reads an SSE stream, calling fn with the data of each
// "message" event (events with another name, events without data — such
// as the priming events of resumable streams, SEP-1699 — comments, ids and
// retry fields are skipped, as the go-sdk client skips them) until fn says
// stop. The body is size-capped by the
// upstream package, so an event is too.
func readEvents(body io.Reader, fn func(data []byte) (bool, *jsonrpc.Error)) error {
	br := bufio.NewReaderSize(body, 16<<10)
	var data, long []byte
	hasData, name := false, ""
	dispatch := func() (bool, error) {
		defer func() { data, hasData, name = data[:0], false, "" }()
		if !hasData || len(bytes.TrimSpace(data)) == 0 || name != "" && name != "message" {
			return false, nil
		}
		stop, rerr := fn(data)
		if rerr != nil {
			return true, rerr
		}
		return stop, nil
	}
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if long != nil {
			line, long = append(long, line...), nil
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 && err == nil {
			if stop, rerr := dispatch(); stop {
				return rerr
			}
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "event":
			name = string(bytes.TrimSpace(value))
		}
		if err != nil {
			if stop, rerr := dispatch(); stop && rerr != nil {
				return rerr
			}
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// agentWriter answers the agent's POST: an SSE stream (progress
// notifications, then the answer) or, for a JSON session, one JSON body;
// the framing and headers are those of the go-sdk's StreamableHTTPHandler.
type agentWriter struct {
	w       http.ResponseWriter
	json    bool
	id      json.RawMessage
	started bool
}

func (a *agentWriter) start() {
	if a.started {
		return
	}
	a.started = true
	h := a.w.Header()
	h.Set("Cache-Control", "no-cache, no-transform")
	if a.json {
		h.Set("Content-Type", "application/json")
	} else {
		h.Set("Content-Type", "text/event-stream")
		h.Set("Connection", "keep-alive")
	}
	a.w.WriteHeader(http.StatusOK)
}

// send writes one message as the session frames it.
func (a *agentWriter) send(msg []byte) {
	a.start()
	if a.json {
		_, _ = a.w.Write(msg)
		return
	}
	if bytes.IndexByte(msg, '\n') >= 0 || bytes.IndexByte(msg, '\r') >= 0 {
		var c bytes.Buffer
		if json.Compact(&c, msg) == nil {
			msg = c.Bytes()
		}
	}
	b := make([]byte, 0, len(msg)+24)
	b = append(b, "event: message\ndata: "...)
	b = append(b, msg...)
	b = append(b, "\n\n"...)
	_, _ = a.w.Write(b)
	_ = http.NewResponseController(a.w).Flush()
}

func (a *agentWriter) progress(params []byte) {
	b := make([]byte, 0, len(params)+64)
	b = append(b, `{"jsonrpc":"2.0","method":"notifications/progress","params":`...)
	b = append(b, params...)
	a.send(append(b, '}'))
}

func (a *agentWriter) result(res json.RawMessage) {
	b := make([]byte, 0, len(res)+len(a.id)+32)
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, a.id...)
	b = append(b, `,"result":`...)
	b = append(b, res...)
	a.send(append(b, '}'))
}

func (a *agentWriter) fail(e *jsonrpc.Error) {
	body := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   *jsonrpc.Error  `json:"error"`
	}{"2.0", a.id, e}
	b, err := json.Marshal(body)
	if err != nil {
		b = []byte(`{"jsonrpc":"2.0","id":` + string(a.id) + `,"error":{"code":-32603,"message":"internal error"}}`)
	}
	a.send(b)
}
