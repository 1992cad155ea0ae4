package httpapi

import (
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
)

func (h *Handler) createServer(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	p, err := parseServerPatch(body)
	if err != nil {
		h.fail(c, err)
		return
	}
	s, w, err := h.Vault.CreateServer(c.Request.Context(), h.intent(c), owner(c), p)
	if err != nil {
		h.fail(c, err)
		return
	}
	written(c, w)
	c.JSON(http.StatusCreated, renderServer(s))
}

func (h *Handler) listServers(c *gin.Context) {
	p, err := listParams(c, domain.ValidServerID)
	if err != nil {
		h.fail(c, err)
		return
	}
	ctx, ok := readContext(c)
	if !ok {
		return
	}
	items, more, err := h.Vault.ListServers(ctx, owner(c), p)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, renderList(items, more, renderServer, func(s domain.Server) string { return s.ID }))
}

func (h *Handler) getServer(c *gin.Context) {
	ctx, ok := readContext(c)
	if !ok {
		return
	}
	s, err := h.Vault.GetServer(ctx, owner(c), c.Param("server_id"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, renderServer(s))
}

func (h *Handler) updateServer(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	if !domain.ValidServerID(c.Param("server_id")) {
		h.fail(c, domain.ErrServerNotFound)
		return
	}
	p, err := parseServerPatch(body)
	if err != nil {
		h.fail(c, err)
		return
	}
	s, w, err := h.Vault.UpdateServer(c.Request.Context(), h.intent(c), owner(c), c.Param("server_id"), p)
	if err != nil {
		h.fail(c, err)
		return
	}
	written(c, w)
	c.JSON(http.StatusOK, renderServer(s))
}

func (h *Handler) deleteServer(c *gin.Context) {
	id := c.Param("server_id")
	w, err := h.Vault.DeleteServer(c.Request.Context(), h.intent(c), owner(c), id)
	if err != nil {
		h.fail(c, err)
		return
	}
	written(c, w)
	c.JSON(http.StatusOK, deletedJSON{ID: id, Object: "mcp.server.deleted", Deleted: true})
}

func (h *Handler) createCredential(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	if !domain.ValidServerID(c.Param("server_id")) {
		h.fail(c, domain.ErrServerNotFound)
		return
	}
	in, err := parseCredentialInput(body)
	if err != nil {
		h.fail(c, err)
		return
	}
	cred, w, err := h.Vault.CreateCredential(c.Request.Context(), h.createIntent(c), owner(c), c.Param("server_id"), in)
	if err != nil {
		h.fail(c, err)
		return
	}
	written(c, w)
	c.JSON(http.StatusCreated, renderCredential(cred))
}

func (h *Handler) listCredentials(c *gin.Context) {
	p, err := listParams(c, domain.ValidCredentialID)
	if err != nil {
		h.fail(c, err)
		return
	}
	include := true
	if v, ok := c.Request.URL.Query()["include_revoked"]; ok {
		switch v[0] {
		case "true":
		case "false":
			include = false
		default:
			h.fail(c, domain.Invalid("include_revoked", "include_revoked must be 'true' or 'false'."))
			return
		}
	}
	ctx, ok := readContext(c)
	if !ok {
		return
	}
	buf := pageBuffers.Get().(*[]byte)
	defer pageBuffers.Put(buf)
	pg, err := h.Vault.CredentialDocs(ctx, owner(c), c.Param("server_id"), include, p, append((*buf)[:0], listStart...))
	if err != nil {
		h.fail(c, err)
		return
	}
	out := appendListEnd(pg.Data, pg.N, pg.FirstID, pg.LastID, pg.More)
	c.Data(http.StatusOK, "application/json; charset=utf-8", out) // copied out before it returns
	if cap(out) <= maxPooledPage {
		*buf = out[:0]
	}
}

// pageBuffers hold list answers while they are written: a page of 20 is
// ~8 KiB, the largest garbage a read made.
var pageBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooledPage: a larger buffer (a page of 100 with long names) is left to
// the collector rather than kept.
const maxPooledPage = 64 << 10

func (h *Handler) getCredential(c *gin.Context) {
	ctx, ok := readContext(c)
	if !ok {
		return
	}
	doc, err := h.Vault.CredentialDoc(ctx, owner(c), c.Param("server_id"), c.Param("credential_id"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", doc)
}

// emptyBody accepts no body or {} (revoke).
func emptyBody(c *gin.Context) bool {
	body, ok := readBody(c)
	if !ok {
		return false
	}
	if _, err := parseObject(body, true); err != nil {
		badRequest(c, err.Param, err.Message)
		return false
	}
	return true
}

func (h *Handler) revokeCredential(c *gin.Context) {
	if !emptyBody(c) {
		return
	}
	cred, w, err := h.Vault.RevokeCredential(c.Request.Context(), h.intent(c), owner(c), c.Param("server_id"), c.Param("credential_id"))
	if err != nil {
		h.fail(c, err)
		return
	}
	written(c, w)
	c.JSON(http.StatusOK, renderCredential(cred))
}

func (h *Handler) deleteCredential(c *gin.Context) {
	id := c.Param("credential_id")
	w, err := h.Vault.DeleteCredential(c.Request.Context(), h.intent(c), owner(c), c.Param("server_id"), id)
	if err != nil {
		h.fail(c, err)
		return
	}
	written(c, w)
	c.JSON(http.StatusOK, deletedJSON{ID: id, Object: "mcp.credential.deleted", Deleted: true})
}

func (h *Handler) testServer(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	obj, perr := parseObject(body, true, "credential_id")
	if perr != nil {
		h.fail(c, perr)
		return
	}
	credID, ferr := field[string](obj, "credential_id", "a credential ID string")
	if ferr != nil {
		h.fail(c, ferr)
		return
	}
	if credID.Set && !credID.Null && !domain.ValidCredentialID(credID.V) {
		h.fail(c, domain.Invalid("credential_id", "credential_id must be a credential ID (mcp_cred_…)."))
		return
	}
	res, err := h.Vault.TestServer(c.Request.Context(), h.intent(c), owner(c), c.Param("server_id"), credID.V)
	if err != nil {
		h.fail(c, err)
		return
	}
	written(c, app.Written{Seq: res.Seq})
	c.JSON(http.StatusOK, renderTest(c.Param("server_id"), res))
}
