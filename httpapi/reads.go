package httpapi

import (
	"context"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/mcpvault/vault/app"
)

// minSequenceHeader names the lowest stream sequence a read must see; a
// write's answer gives it as X-Vault-Sequence.
const minSequenceHeader = "X-Vault-Min-Sequence"

// readContext is the context a read runs in: the request's, carrying
// X-Vault-Min-Sequence when sent (the read then waits for the read model to
// apply that sequence instead of asking the stream for its last one). On a
// malformed header it answers 400 and returns false.
func readContext(c *gin.Context) (context.Context, bool) {
	ctx := c.Request.Context()
	vals, present := c.Request.Header[minSequenceHeader]
	if !present {
		return ctx, true
	}
	if len(vals) != 1 || len(vals[0]) == 0 || len(vals[0]) > 20 {
		badRequest(c, minSequenceHeader, minSequenceHeader+" must be one stream sequence: a decimal integer (a write's X-Vault-Sequence).")
		return nil, false
	}
	seq, err := strconv.ParseUint(vals[0], 10, 64)
	if err != nil {
		badRequest(c, minSequenceHeader, minSequenceHeader+" must be one stream sequence: a decimal integer (a write's X-Vault-Sequence).")
		return nil, false
	}
	return app.WithMinSequence(ctx, seq), true
}
