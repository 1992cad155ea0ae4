package e2e

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/mcpvault/vault/internal/vaulttest"
)

// isoOwned is what one owner created.
type isoOwned struct {
	who              apiWho
	server, cred     string
	serverRaw        []byte
	credRaw          []byte
	secondServer     string // a second server of the same owner
	secondServerCred string
}

// TestIsolation: between two accounts and between end users of one account
// (and "no user"), anything foreign is answered exactly as a random,
// well-formed id would be, is never changed, and never listed.
func TestIsolation(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	owners := []apiWho{
		{},                                   // account A, no end user
		{User: "alice"},                      // account A, alice
		{User: "bob"},                        // account A, bob
		{User: "Alice"},                      // user ids are case-sensitive
		{Key: vaulttest.KeyB},                // account B, no end user
		{Key: vaulttest.KeyB, User: "alice"}, // the same user id in another account
	}
	var all []*isoOwned
	for _, w := range owners {
		o := &isoOwned{who: w}
		s, sraw := apiMustOK(t, env, w, "POST", "/servers", map[string]any{"name": "srv of " + w.String(), "server_label": "l", "server_url": "https://e.example/mcp"}, http.StatusCreated)
		o.server, o.serverRaw = s["id"].(string), sraw
		c, craw := apiMustOK(t, env, w, "POST", "/servers/"+o.server+"/credentials", map[string]any{"name": "cred of " + w.String(), "bearer_token": "secret-of-" + w.String()}, http.StatusCreated)
		o.cred, o.credRaw = c["id"].(string), craw
		o.secondServer = apiMustCreateServer(t, env, w, nil)["id"].(string)
		o.secondServerCred = apiMustCreateCredential(t, env, w, o.secondServer, map[string]any{"bearer_token": "second-secret"})["id"].(string)
		all = append(all, o)
	}

	type op struct {
		name, method, path string
		body               any
	}
	// Operations on a victim's ids; {S} and {C} are the victim's server and
	// credential, {MS} is one of the intruder's own servers.
	ops := []op{
		{"get server", "GET", "/servers/{S}", nil},
		{"update server", "POST", "/servers/{S}", map[string]any{"name": "pwned"}},
		{"update server to null", "POST", "/servers/{S}", map[string]any{"server_description": nil}},
		{"delete server", "DELETE", "/servers/{S}", nil},
		{"list credentials", "GET", "/servers/{S}/credentials", nil},
		{"list credentials paged", "GET", "/servers/{S}/credentials?limit=1&order=asc", nil},
		{"create credential", "POST", "/servers/{S}/credentials", map[string]any{"bearer_token": "planted"}},
		{"get credential", "GET", "/servers/{S}/credentials/{C}", nil},
		{"revoke credential", "POST", "/servers/{S}/credentials/{C}/revoke", nil},
		{"delete credential", "DELETE", "/servers/{S}/credentials/{C}", nil},
		{"get credential via own server", "GET", "/servers/{MS}/credentials/{C}", nil},
		{"revoke credential via own server", "POST", "/servers/{MS}/credentials/{C}/revoke", map[string]any{}},
		{"delete credential via own server", "DELETE", "/servers/{MS}/credentials/{C}", nil},
	}
	for _, victim := range all {
		for _, intruder := range all {
			if victim == intruder {
				continue
			}
			for _, o := range ops {
				path := strings.NewReplacer("{S}", victim.server, "{C}", victim.cred, "{MS}", intruder.server).Replace(o.path)
				foreign := intruder.who.do(t, env, o.method, path, o.body)
				apiMustError(t, foreign, http.StatusNotFound, "not_found_error", nil)
				randomPath := strings.NewReplacer("{S}", "mcp_srv_"+apiRandomHex(t), "{C}", "mcp_cred_"+apiRandomHex(t), "{MS}", intruder.server).Replace(o.path)
				random := intruder.who.do(t, env, o.method, randomPath, o.body)
				if random.Status != foreign.Status || !bytes.Equal(random.Body, foreign.Body) ||
					random.Header.Get("Content-Type") != foreign.Header.Get("Content-Type") {
					t.Errorf("%s on %s's ids by %s: foreign and random answers differ:\n%d %s\n%d %s",
						o.name, victim.who, intruder.who, foreign.Status, foreign.Body, random.Status, random.Body)
				}
			}
		}
	}

	// A credential addressed through another server of its own owner is not found either.
	for _, o := range all {
		for _, method := range []string{"GET", "DELETE"} {
			apiMustError(t, o.who.do(t, env, method, "/servers/"+o.secondServer+"/credentials/"+o.cred, nil), http.StatusNotFound, "not_found_error", nil)
		}
		apiMustError(t, o.who.do(t, env, "POST", "/servers/"+o.secondServer+"/credentials/"+o.cred+"/revoke", nil), http.StatusNotFound, "not_found_error", nil)
	}

	// Nothing was changed, and each owner sees exactly its own items.
	for _, o := range all {
		if r := o.who.do(t, env, "GET", "/servers/"+o.server, nil); r.Status != http.StatusOK || !bytes.Equal(r.Body, o.serverRaw) {
			t.Errorf("%s's server changed by intruders: %d %s", o.who, r.Status, r.Body)
		}
		if r := o.who.do(t, env, "GET", "/servers/"+o.server+"/credentials/"+o.cred, nil); r.Status != http.StatusOK || !bytes.Equal(r.Body, o.credRaw) {
			t.Errorf("%s's credential changed by intruders: %d %s", o.who, r.Status, r.Body)
		}
		servers := apiMustList(t, env, o.who, "/servers?limit=100&order=asc")
		if !slices.Equal(servers.IDs, []string{o.server, o.secondServer}) {
			t.Errorf("%s lists servers %v, want %v", o.who, servers.IDs, []string{o.server, o.secondServer})
		}
		creds := apiMustList(t, env, o.who, "/servers/"+o.server+"/credentials?limit=100")
		if !slices.Equal(creds.IDs, []string{o.cred}) {
			t.Errorf("%s lists credentials %v, want [%s]", o.who, creds.IDs, o.cred)
		}
		for _, it := range creds.Items {
			if it["revoked_at"] != nil {
				t.Errorf("%s's credential was revoked by an intruder", o.who)
			}
		}
	}
}

// TestIsolationListCursors: a list cursor naming a foreign object never
// brings foreign items into the caller's list.
func TestIsolationListCursors(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	alice, bob := apiWho{User: "alice"}, apiWho{Key: vaulttest.KeyB}
	var aliceIDs []string
	for i := 0; i < 3; i++ {
		aliceIDs = append(aliceIDs, apiMustCreateServer(t, env, alice, nil)["id"].(string))
	}
	bobSrv := apiMustCreateServer(t, env, bob, nil)["id"].(string)
	for _, q := range []string{"?order=asc&after=" + aliceIDs[0], "?before=" + aliceIDs[2], "?order=asc"} {
		p := apiMustList(t, env, bob, "/servers"+q)
		for _, id := range p.IDs {
			if id != bobSrv {
				t.Errorf("bob's list %s shows %s", q, id)
			}
		}
	}
}
