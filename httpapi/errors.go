package httpapi

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
)

// apiError is the body of every error answer.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Error types by status.
const (
	typeInvalid     = "invalid_request_error"
	typeAuth        = "authentication_error"
	typeNotFound    = "not_found_error"
	typeConflict    = "conflict_error"
	typeRateLimit   = "rate_limit_error"
	typeUnavailable = "service_unavailable_error"
	typeServer      = "api_error"
)

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func abort(c *gin.Context, status int, typ, msg, param, code string) {
	c.AbortWithStatusJSON(status, gin.H{"error": apiError{Message: msg, Type: typ, Param: strp(param), Code: strp(code)}})
}

func badRequest(c *gin.Context, param, msg string) {
	abort(c, http.StatusBadRequest, typeInvalid, msg, param, "")
}

// answer is how one kind of error is answered.
type answer struct {
	status int
	typ    string
}

// kinds is the one table from domain error kinds to answers; any error it
// does not name is a 500.
var kinds = map[domain.Kind]answer{
	domain.KindInvalid:     {http.StatusBadRequest, typeInvalid},
	domain.KindNotFound:    {http.StatusNotFound, typeNotFound},
	domain.KindConflict:    {http.StatusConflict, typeConflict},
	domain.KindUnavailable: {http.StatusServiceUnavailable, typeUnavailable},
}

// sentinels are the application's errors that are not domain errors, with
// their code.
var sentinels = []struct {
	err  error
	code string
}{
	{app.ErrUnavailable, "stream_unavailable"},
	{app.ErrOutcomeUnknown, "write_outcome_unknown"},
	{app.ErrReadModelBehind, "read_model_behind"},
}

// fail maps an error to its answer.
func (h *Handler) fail(c *gin.Context, err error) {
	var de *domain.Error
	if errors.As(err, &de) {
		if a, ok := kinds[de.Kind]; ok {
			param := ""
			if de.Kind == domain.KindInvalid {
				param = de.Param
			}
			abort(c, a.status, a.typ, de.Message, param, de.Code)
			return
		}
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			abort(c, http.StatusServiceUnavailable, typeUnavailable, s.err.Error(), "", s.code)
			return
		}
	}
	if ctxErr := c.Request.Context().Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		abort(c, 499, typeInvalid, "The client closed the request.", "", "")
		return
	}
	// Only unknown errors are logged with detail; they never carry a secret.
	h.Log.Error("internal error", "method", c.Request.Method, "route", c.FullPath(), "err", err)
	abort(c, http.StatusInternalServerError, typeServer, "The server had an error while processing the request.", "", "")
}

func notFoundRoute(c *gin.Context) {
	abort(c, http.StatusNotFound, typeNotFound, "Unknown request URL.", "", "")
}
