package e2e

import (
	"net/http"
	"testing"

	"github.com/mcpvault/vault/internal/vaulttest"
)

func TestSmoke(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	sid := env.MustCreateServer(t, "", nil)
	c := env.MustCreateCredential(t, "", sid, map[string]any{"name": "Personal Linear token", "bearer_token": "lin_api_xxx"})
	r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid + "/credentials/" + c["id"].(string)})
	if r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
}
