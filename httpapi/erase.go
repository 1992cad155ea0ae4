package httpapi

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// erasedJSON is the answer of eraseOwner.
type erasedJSON struct {
	Object           string   `json:"object"`
	User             string   `json:"user"`
	Erased           bool     `json:"erased"`
	DeletedServerIDs []string `json:"deleted_server_ids"`
}

// eraseOwner erases the end user named by X-On-Behalf-Of within the
// caller's account (docs/api.md, "Erasing an end user").
func (h *Handler) eraseOwner(c *gin.Context) {
	o := owner(c)
	e, err := h.Vault.EraseOwner(c.Request.Context(), o)
	if err != nil {
		h.fail(c, err)
		return
	}
	written(c, e.Written)
	c.JSON(http.StatusOK, erasedJSON{Object: "mcp.owner.erased", User: o.User, Erased: true, DeletedServerIDs: e.ServerIDs})
}
