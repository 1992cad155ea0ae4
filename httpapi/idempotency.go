package httpapi

import (
	"bytes"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/mcpvault/vault/app"
)

const (
	bodyKey   = "vault.body"
	intentKey = "vault.intent"
	// seqHeader carries the stream sequence of a write's last event.
	seqHeader = "X-Vault-Sequence"
)

// held keeps a handler's answer back until the idempotency record holds it:
// an answer is remembered before it is sent, so a client that got it and
// retries gets it again, whatever happens to this process afterwards.
type held struct {
	gin.ResponseWriter
	status int
	buf    bytes.Buffer
}

func (r *held) WriteHeader(code int) { r.status = code }
func (r *held) WriteHeaderNow()      {}
func (r *held) Status() int          { return r.status }
func (r *held) Written() bool        { return r.buf.Len() > 0 }
func (r *held) Size() int            { return r.buf.Len() }

func (r *held) Write(b []byte) (int, error)       { return r.buf.Write(b) }
func (r *held) WriteString(s string) (int, error) { return r.buf.WriteString(s) }

// send writes the held answer to the client.
func (r *held) send() {
	r.ResponseWriter.WriteHeader(r.status)
	_, _ = r.ResponseWriter.Write(r.buf.Bytes())
}

// attemptTTL is how long an attempt may run before a retry with its key
// takes it over: a write is bounded by the write timeout (4 s), testServer
// also by the upstream timeout (10 s).
func attemptTTL(c *gin.Context) time.Duration {
	if c.FullPath() == "/api/v1/llm/mcp/servers/:server_id/test" {
		return 16 * time.Second
	}
	return 8 * time.Second
}

// idempotent implements Idempotency-Key on POSTs: the same key and request
// from the same owner within 24 h gets the first answer again and stores
// nothing new — also after the first answer was lost (client gone, API
// killed, stream failover): the write keeps its ids (its Intent) across
// attempts, and an attempt that takes over a dead one finds its event in
// the stream. Another request under the key gets 422; a request while an
// attempt is really running gets 409.
func (h *Handler) idempotent(c *gin.Context) {
	h.idempotentWith(c, h.Vault.NewIntent)
}

// idempotentCreate is idempotent for credential creates: the intent a first
// attempt records takes its credential id from the server's data-key pool
// (app/keypool.go), so that a retry finds the create by that id.
func (h *Handler) idempotentCreate(c *gin.Context) {
	h.idempotentWith(c, func() app.Intent { return h.Vault.NewCreateIntent(owner(c), c.Param("server_id")) })
}

func (h *Handler) idempotentWith(c *gin.Context, newIntent func() app.Intent) {
	vals, present := c.Request.Header["Idempotency-Key"]
	if !present {
		c.Next()
		return
	}
	key := ""
	if len(vals) > 0 {
		key = vals[0]
	}
	if len(vals) != 1 || key == "" || !utf8.ValidString(key) || utf8.RuneCountInString(key) > 255 || !validUser(key) {
		badRequest(c, "Idempotency-Key", "Idempotency-Key must be 1 to 255 printable characters.")
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	c.Set(bodyKey, body)
	ctx := c.Request.Context()
	outcome, prev, ticket, err := h.Vault.BeginIdempotentWith(ctx, owner(c), key, attemptTTL(c), newIntent(),
		[]byte(c.Request.Method), []byte(c.Request.URL.Path), body)
	if err != nil {
		h.fail(c, err)
		return
	}
	switch outcome {
	case app.IdemReplay:
		c.Header("Idempotent-Replayed", "true")
		if prev.Seq > 0 {
			c.Header(seqHeader, strconv.FormatUint(prev.Seq, 10))
		}
		c.Data(prev.Status, prev.ContentType, prev.Body)
		c.Abort()
		return
	case app.IdemInFlight:
		abort(c, http.StatusConflict, typeConflict,
			"A request with this Idempotency-Key is still in progress; retry after it completes.", "", "idempotency_key_in_use")
		return
	case app.IdemMismatch:
		abort(c, http.StatusUnprocessableEntity, typeInvalid,
			"This Idempotency-Key was already used with a different request.", "Idempotency-Key", "idempotency_key_reused")
		return
	}
	c.Set(intentKey, ticket.Intent)
	defer h.Vault.DiscardIntent(ticket.Intent) // a pooled key the request did not use
	rec := &held{ResponseWriter: c.Writer, status: http.StatusOK}
	c.Writer = rec
	defer func() {
		if p := recover(); p != nil {
			// Let the recovery handler's 500 reach the client, and a retry
			// take the attempt over at once.
			c.Writer = rec.ResponseWriter
			h.Vault.ReleaseIdempotent(ctx, ticket)
			panic(p)
		}
	}()
	c.Next()
	switch status := rec.status; {
	case status >= 500, status == http.StatusConflict, status == 499:
		h.Vault.ReleaseIdempotent(ctx, ticket)
	default:
		seq, _ := strconv.ParseUint(rec.Header().Get(seqHeader), 10, 64)
		h.Vault.FinishIdempotent(ctx, ticket, status, rec.Header().Get("Content-Type"), rec.buf.Bytes(), seq)
	}
	rec.send()
}

// intent is the identity of this request's write: the idempotency
// ticket's, or a new one.
func (h *Handler) intent(c *gin.Context) app.Intent {
	if v, ok := c.Get(intentKey); ok {
		return v.(app.Intent)
	}
	return h.Vault.NewIntent()
}

// createIntent is intent for a credential create on the route's server.
func (h *Handler) createIntent(c *gin.Context) app.Intent {
	if v, ok := c.Get(intentKey); ok {
		return v.(app.Intent)
	}
	return h.Vault.NewCreateIntent(owner(c), c.Param("server_id"))
}

// written sets the X-Vault-Sequence of a write's answer.
func written(c *gin.Context, w app.Written) {
	if w.Seq > 0 {
		c.Header(seqHeader, strconv.FormatUint(w.Seq, 10))
	}
}
