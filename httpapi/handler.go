// Package httpapi is the HTTP adapter of the vault and the only importer of
// Gin: it authenticates, validates requests at the edge, calls the
// application layer and renders its answers and errors.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/metrics"
	"github.com/mcpvault/vault/openapi"
	"github.com/mcpvault/vault/projections"
)

// APIKey is one accepted API key and the account it belongs to.
type APIKey struct {
	Account string
	Key     string
}

// Handler serves the vault's HTTP API.
type Handler struct {
	Vault *app.Vault
	Log   *slog.Logger
	// Keys are the accepted API keys.
	Keys []APIKey
	// RateLimit is each account's sustained requests per second (0 = off),
	// with bursts of RateBurst.
	RateLimit float64
	RateBurst int
	// Ready reports whether the process can serve, with every figure (see
	// /readyz). The public /readyz shows only the status and reasons; the
	// figures (counts, sequence numbers) are served by MetricsRoutes.
	Ready func(ctx context.Context) (bool, any)
	// Registry is what /metrics serves; nil = a private registry.
	Registry *prometheus.Registry
	// MCP serves the MCP endpoint (package mcpproxy); nil = 404.
	MCP http.Handler
	// Metrics receives the HTTP series; nil = metrics.New(Registry).
	Metrics *metrics.Metrics
	// BeforeScrape, when set, runs before each /metrics answer (to refresh
	// gauges computed on demand, such as the projector lag).
	BeforeScrape func()
	// SeparateMetrics moves /metrics and the detailed readiness off the API
	// routes (VAULT_METRICS_ADDR); serve them with MetricsRoutes.
	SeparateMetrics bool

	keyHashes [][32]byte
	limiters  sync.Map // account → *rate.Limiter
}

const ownerKey = "vault.owner"

// Routes builds the Gin engine.
func (h *Handler) Routes() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	h.keyHashes = make([][32]byte, len(h.Keys))
	for i, k := range h.Keys {
		h.keyHashes[i] = sha256.Sum256([]byte(k.Key))
	}
	if h.Registry == nil {
		h.Registry = prometheus.NewRegistry()
	}
	if h.Metrics == nil {
		h.Metrics = metrics.New(h.Registry)
	}

	r := gin.New()
	r.HandleMethodNotAllowed = false
	// An unknown route such as "/servers/" is a JSON 404 (API.md), not an
	// HTML 301/307 redirect to "/servers".
	r.RedirectTrailingSlash = false
	r.Use(h.observe, gin.CustomRecoveryWithWriter(io.Discard, h.recovered))
	r.NoRoute(notFoundRoute)
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", h.readyz)
	r.GET("/openapi.json", serveOpenAPI)
	if !h.SeparateMetrics {
		r.GET("/metrics", gin.WrapH(h.metricsHandler()))
		r.GET("/readyz/detail", h.readyzDetail)
	}

	api := r.Group("/api/v1/llm/mcp", h.authenticate, h.limit, pathIDs)
	api.POST("/servers", h.idempotent, h.createServer)
	api.GET("/servers", h.listServers)
	api.GET("/servers/:server_id", h.getServer)
	api.POST("/servers/:server_id", h.idempotent, h.updateServer)
	api.DELETE("/servers/:server_id", h.deleteServer)
	api.POST("/servers/:server_id/credentials", h.idempotentCreate, h.createCredential)
	api.GET("/servers/:server_id/credentials", h.listCredentials)
	api.GET("/servers/:server_id/credentials/:credential_id", h.getCredential)
	api.POST("/servers/:server_id/credentials/:credential_id/revoke", h.idempotent, h.revokeCredential)
	api.DELETE("/servers/:server_id/credentials/:credential_id", h.deleteCredential)
	api.POST("/servers/:server_id/test", h.idempotent, h.testServer)
	api.POST("/servers/:server_id/approvals", h.idempotent, h.createApproval)
	api.Match([]string{http.MethodGet, http.MethodPost, http.MethodDelete}, "/servers/:server_id/mcp", h.mcpEndpoint)
	api.POST("/erase", h.idempotent, h.eraseOwner) // httpapi/erase.go
	return r
}

// observe records metrics and one log line per request: method, route
// template, status and latency. Never headers, bodies or query strings.
func (h *Handler) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	d := time.Since(start)
	status := c.Writer.Status()
	h.Metrics.ObserveRequest(c.Request.Method, route, status, d)
	if c.Writer.Header().Get("Idempotent-Replayed") == "true" {
		h.Metrics.IdempotencyHit()
	}
	h.Log.Debug("request", "method", metrics.Method(c.Request.Method), "route", route, "status", status, "duration", d)
}

// maxPanicValue bounds the logged panic value.
const maxPanicValue = 1 << 10

// recovered answers a panic with a generic 500 and logs the panic value and
// the stack, for the operator to fix the bug. It logs neither the request's
// headers nor its body (they may carry keys and secrets).
func (h *Handler) recovered(c *gin.Context, v any) {
	msg := fmt.Sprint(v)
	if len(msg) > maxPanicValue {
		msg = msg[:maxPanicValue] + "…"
	}
	h.Log.Error("panic serving request", "method", metrics.Method(c.Request.Method), "route", c.FullPath(),
		"panic", msg, "stack", string(debug.Stack()))
	abort(c, http.StatusInternalServerError, typeServer, "The server had an error while processing the request.", "", "")
}

// pathIDs answers 404 for a path ID that does not have its shape (API.md),
// before the query or the body is looked at: a malformed ID is an unknown
// resource whatever else is wrong with the request.
func pathIDs(c *gin.Context) {
	if id, ok := paramOf(c, "server_id"); ok && !domain.ValidServerID(id) {
		abort(c, http.StatusNotFound, typeNotFound, domain.ErrServerNotFound.Message, "", "")
		return
	}
	if id, ok := paramOf(c, "credential_id"); ok && !domain.ValidCredentialID(id) {
		abort(c, http.StatusNotFound, typeNotFound, domain.ErrCredentialNotFound.Message, "", "")
	}
}

func paramOf(c *gin.Context, name string) (string, bool) {
	for _, p := range c.Params {
		if p.Key == name {
			return p.Value, true
		}
	}
	return "", false
}

// authenticate checks the bearer API key in constant time against every
// configured key and resolves the owner.
func (h *Handler) authenticate(c *gin.Context) {
	auth := c.GetHeader("Authorization")
	scheme, key, ok := strings.Cut(auth, " ")
	if auth == "" || !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
		abort(c, http.StatusUnauthorized, typeAuth,
			"Missing or malformed API key. Send 'Authorization: Bearer <api-key>'.", "", "missing_api_key")
		return
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(key)))
	match := -1
	for i := range h.keyHashes {
		if subtle.ConstantTimeCompare(sum[:], h.keyHashes[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		abort(c, http.StatusUnauthorized, typeAuth, "Incorrect API key provided.", "", "invalid_api_key")
		return
	}
	owner := events.Owner{Account: h.Keys[match].Account}
	if vals, present := c.Request.Header["X-On-Behalf-Of"]; present {
		user := ""
		if len(vals) > 0 {
			user = vals[0]
		}
		if len(vals) > 1 || !validUser(user) {
			badRequest(c, "X-On-Behalf-Of", "X-On-Behalf-Of must be 1 to 255 printable characters.")
			return
		}
		owner.User = user
	}
	c.Set(ownerKey, owner)
}

func validUser(s string) bool {
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > 255 {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// limit applies the account's request rate.
func (h *Handler) limit(c *gin.Context) {
	if h.RateLimit <= 0 {
		return
	}
	acct := owner(c).Account
	l, ok := h.limiters.Load(acct)
	if !ok {
		burst := h.RateBurst
		if burst <= 0 {
			burst = int(2 * h.RateLimit)
		}
		l, _ = h.limiters.LoadOrStore(acct, rate.NewLimiter(rate.Limit(h.RateLimit), burst))
	}
	if !l.(*rate.Limiter).Allow() {
		c.Header("Retry-After", "1")
		abort(c, http.StatusTooManyRequests, typeRateLimit, "Too many requests for this account; slow down.", "", "rate_limited")
	}
}

func owner(c *gin.Context) events.Owner { return c.MustGet(ownerKey).(events.Owner) }

// readyz answers 200 or 503 with each component's status and reason only:
// counts and sequence numbers are for the operator (readyzDetail).
func (h *Handler) readyz(c *gin.Context) {
	ok, detail := h.Ready(c.Request.Context())
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, publicReadiness(detail))
}

// readyzDetail is /readyz with every figure, served next to /metrics.
func (h *Handler) readyzDetail(c *gin.Context) {
	ok, detail := h.Ready(c.Request.Context())
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, detail)
}

// publicReadiness keeps the strings and booleans of a readiness body
// (status, ok, reason) and drops every number, at any depth.
func publicReadiness(detail any) any {
	raw, err := json.Marshal(detail)
	if err != nil {
		return gin.H{}
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return gin.H{}
	}
	var strip func(any) any
	strip = func(v any) any {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				if _, isNum := x.(float64); isNum {
					delete(t, k)
					continue
				}
				t[k] = strip(x)
			}
		case []any:
			out := t[:0]
			for _, x := range t {
				if _, isNum := x.(float64); !isNum {
					out = append(out, strip(x))
				}
			}
			return out
		}
		return v
	}
	return strip(v)
}

func (h *Handler) metricsHandler() http.Handler {
	g := prometheus.Gatherer(h.Registry)
	if h.BeforeScrape != nil {
		g = prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			h.BeforeScrape()
			return h.Registry.Gather()
		})
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// MetricsRoutes serves /metrics and the detailed /readyz (with counts and
// sequence numbers) for VAULT_METRICS_ADDR. Call it after Routes.
func (h *Handler) MetricsRoutes() http.Handler {
	r := gin.New()
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, h.recovered))
	r.NoRoute(notFoundRoute)
	r.GET("/metrics", gin.WrapH(h.metricsHandler()))
	r.GET("/readyz", h.readyzDetail)
	return r
}

// listParams parses limit, order, after and before.
func listParams(c *gin.Context, validID func(string) bool) (projections.Page, error) {
	p := projections.Page{Limit: 20, Desc: true}
	q := c.Request.URL.Query()
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > 100 {
			return p, domain.Invalid("limit", "limit must be an integer from 1 to 100.")
		}
		p.Limit = n
	}
	if v, ok := q["order"]; ok {
		switch v[0] {
		case "asc":
			p.Desc = false
		case "desc":
		default:
			return p, domain.Invalid("order", "order must be 'asc' or 'desc'.")
		}
	}
	for _, name := range []string{"after", "before"} {
		if v, ok := q[name]; ok {
			if !validID(v[0]) {
				return p, domain.Invalid(name, name+" must be an object ID from this list.")
			}
			if name == "after" {
				p.After = v[0]
			} else {
				p.Before = v[0]
			}
		}
	}
	if p.After != "" && p.Before != "" {
		return p, domain.Invalid("before", "Give at most one of after and before.")
	}
	return p, nil
}

// serveOpenAPI serves the OpenAPI 3.1 document of this API.
func serveOpenAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", openapi.Document)
}
