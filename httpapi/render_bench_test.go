package httpapi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// BenchmarkRenderList encodes a page of 20 credentials as a list answer.
func BenchmarkRenderList(b *testing.B) {
	now := events.NewTime(time.Now())
	name, prev := "Personal token", "****...wxyz"
	items := make([]domain.Credential, 20)
	for i := range items {
		items[i] = domain.Credential{ID: "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d11", ServerID: "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d01",
			Name: &name, AuthType: "bearer", AuthorizationPreview: &prev, HeaderNames: []string{}, ExpiresAt: &now, CreatedAt: now, UpdatedAt: now}
	}
	for b.Loop() {
		if _, err := json.Marshal(renderList(items, true, renderCredential, func(c domain.Credential) string { return c.ID })); err != nil {
			b.Fatal(err)
		}
	}
}
