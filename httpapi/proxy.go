package httpapi

import (
	"bytes"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/mcpproxy"
)

// mcpEndpoint serves /servers/:server_id/mcp: the vault's authentication
// and ownership first (someone else's server is a 404 before any MCP
// exchange), then the MCP endpoint (package mcpproxy). A request of an open
// session is checked by the endpoint itself (the session is bound to its
// owner and server, and re-reads both before every request).
func (h *Handler) mcpEndpoint(c *gin.Context) {
	id := c.Param("server_id")
	if h.MCP == nil || !domain.ValidServerID(id) {
		h.fail(c, domain.ErrServerNotFound)
		return
	}
	if c.GetHeader("Mcp-Session-Id") == "" {
		if _, err := h.Vault.GetServer(c.Request.Context(), owner(c), id); err != nil {
			h.fail(c, err)
			return
		}
	}
	// An MCP stream (SSE) lives as long as its session, not within the
	// server's write timeout: lift it for this request (the session's idle
	// limit bounds it instead). Older writers without the support are left
	// as they are.
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Time{})
	ctx := mcpproxy.WithCaller(c.Request.Context(), mcpproxy.Caller{Owner: owner(c), ServerID: id})
	h.MCP.ServeHTTP(c.Writer, c.Request.WithContext(ctx))
}

// approvalJSON is the mcp.approval object.
type approvalJSON struct {
	ID              string      `json:"id"`
	Object          string      `json:"object"`
	ServerID        string      `json:"server_id"`
	ToolName        string      `json:"tool_name"`
	ArgumentsSHA256 *string     `json:"arguments_sha256"`
	CreatedAt       events.Time `json:"created_at"`
	ExpiresAt       events.Time `json:"expires_at"`
}

// createApproval issues a single-use approval for one tools/call on a
// server whose require_approval is "always" (docs/api.md).
func (h *Handler) createApproval(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	if !domain.ValidServerID(c.Param("server_id")) {
		h.fail(c, domain.ErrServerNotFound)
		return
	}
	obj, perr := parseObject(body, false, "tool_name", "arguments", "ttl_seconds")
	if perr != nil {
		h.fail(c, perr)
		return
	}
	tool, err1 := field[string](obj, "tool_name", "a string")
	ttl, err2 := field[int](obj, "ttl_seconds", "an integer")
	if err := firstErr(err1, err2); err != nil {
		h.fail(c, err)
		return
	}
	if !tool.Set || tool.Null || tool.V == "" {
		h.fail(c, domain.Invalid("tool_name", "tool_name is required: the tool the approval is for."))
		return
	}
	var args []byte
	if raw, ok := obj["arguments"]; ok && !isNull(raw) {
		if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
			h.fail(c, domain.Invalid("arguments", "arguments must be a JSON object (the exact arguments of the call) or null (any arguments)."))
			return
		}
		args = raw
	}
	var d time.Duration
	if ttl.Set && !ttl.Null {
		if ttl.V < 1 || ttl.V > 900 {
			h.fail(c, domain.Invalid("ttl_seconds", "ttl_seconds must be from 1 to 900."))
			return
		}
		d = time.Duration(ttl.V) * time.Second
	}
	a, err := h.Vault.CreateApproval(c.Request.Context(), owner(c), c.Param("server_id"), tool.V, args, d)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, approvalJSON{ID: a.ID, Object: "mcp.approval", ServerID: a.ServerID, ToolName: a.ToolName,
		ArgumentsSHA256: a.ArgumentsSHA256, CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt})
}
