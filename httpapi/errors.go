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

// fail maps an error to its answer: the one table from errors to statuses.
func (h *Handler) fail(c *gin.Context, err error) {
	var de *domain.Error
	switch {
	case errors.As(err, &de):
		switch de.Kind {
		case domain.KindInvalid:
			abort(c, http.StatusBadRequest, typeInvalid, de.Message, de.Param, de.Code)
		case domain.KindNotFound:
			abort(c, http.StatusNotFound, typeNotFound, de.Message, "", "")
		case domain.KindConflict:
			abort(c, http.StatusConflict, typeConflict, de.Message, "", de.Code)
		case domain.KindUnavailable:
			abort(c, http.StatusServiceUnavailable, typeUnavailable, de.Message, "", de.Code)
		}
	case errors.Is(err, app.ErrUnavailable):
		abort(c, http.StatusServiceUnavailable, typeUnavailable, err.Error(), "", "stream_unavailable")
	case errors.Is(err, app.ErrReadModelBehind):
		abort(c, http.StatusServiceUnavailable, typeUnavailable, err.Error(), "", "read_model_behind")
	case errors.Is(err, c.Request.Context().Err()) && c.Request.Context().Err() != nil:
		abort(c, 499, typeInvalid, "The client closed the request.", "", "")
	default:
		// Only unknown errors are logged with detail; they never carry a secret.
		h.Log.Error("internal error", "method", c.Request.Method, "route", c.FullPath(), "err", err)
		abort(c, http.StatusInternalServerError, typeServer, "The server had an error while processing the request.", "", "")
	}
}

func notFoundRoute(c *gin.Context) {
	abort(c, http.StatusNotFound, typeNotFound, "Unknown request URL.", "", "")
}
