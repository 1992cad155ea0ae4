package httpapi

import (
	"bytes"
	"net/http"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/mcpvault/vault/app"
)

const bodyKey = "vault.body"

// recorder keeps a copy of the answer for the idempotency bucket.
type recorder struct {
	gin.ResponseWriter
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) WriteString(s string) (int, error) {
	r.buf.WriteString(s)
	return r.ResponseWriter.WriteString(s)
}

// idempotent implements Idempotency-Key on POSTs: the same key and request
// from the same owner within 24 h gets the first answer again and stores
// nothing new; another request under the key gets 422; a request while the
// first is in flight gets 409. Answers that must stay retryable (5xx, 409,
// 429) are not remembered.
func (h *Handler) idempotent(c *gin.Context) {
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
	outcome, prev, ticket, err := h.Vault.BeginIdempotent(ctx, owner(c), key,
		[]byte(c.Request.Method), []byte(c.Request.URL.Path), body)
	if err != nil {
		h.fail(c, err)
		return
	}
	switch outcome {
	case app.IdemReplay:
		c.Header("Idempotent-Replayed", "true")
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
	rec := &recorder{ResponseWriter: c.Writer}
	c.Writer = rec
	c.Request = c.Request.WithContext(ticket.WithIdempotency(ctx))
	c.Next()
	switch status := rec.Status(); {
	case status >= 500, status == http.StatusConflict, status == http.StatusTooManyRequests, status == 499:
		h.Vault.AbandonIdempotent(ctx, ticket)
	default:
		h.Vault.FinishIdempotent(ctx, ticket, status, rec.Header().Get("Content-Type"), rec.buf.Bytes())
	}
}
