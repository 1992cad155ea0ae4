package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/internal/vaulttest"
)

// valCase is one row of the validation table. Path holds {srv} and {cred}
// for the fixture server and credential. Body is sent raw when it is a
// string or []byte, JSON-encoded otherwise. Status < 400 rows are boundary
// values that must be accepted.
type valCase struct {
	name   string
	method string
	path   string
	body   any
	ctype  string            // Content-Type; "" = application/json when there is a body; "-" = none
	auth   string            // Authorization header; "" = Bearer KeyA; "-" = none
	header map[string]string // extra headers, sent even when empty
	status int
	typ    string
	param  any // nil = JSON null
	code   string
}

// valClient does not follow redirects: a redirect is an answer to check.
var valClient = &http.Client{Timeout: 30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// valSend sends a table row with full control over the headers.
func valSend(tb testing.TB, env *vaulttest.Env, c valCase, srv, cred string) vaulttest.Response {
	tb.Helper()
	path := strings.NewReplacer("{srv}", srv, "{cred}", cred).Replace(c.path)
	url := env.URL + "/api/v1/llm/mcp" + path
	if strings.HasPrefix(path, "!") {
		url = env.URL + path[1:]
	}
	req, err := http.NewRequest(c.method, url, vaulttest.Body(tb, c.body))
	if err != nil {
		tb.Fatal(err)
	}
	switch {
	case c.ctype == "-":
	case c.ctype != "":
		req.Header["Content-Type"] = []string{c.ctype}
	case c.body != nil:
		req.Header.Set("Content-Type", "application/json")
	}
	switch c.auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+vaulttest.KeyA)
	case "-":
	default:
		req.Header["Authorization"] = []string{c.auth}
	}
	for k, v := range c.header {
		req.Header[k] = []string{v}
	}
	resp, err := valClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", c.method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return vaulttest.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// valWith returns base with the given fields set; a value of valAbsent removes the field.
func valWith(base map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == valAbsent {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

type valAbsentT struct{}

var valAbsent = valAbsentT{}

func valRepeat(s string, n int) string { return strings.Repeat(s, n) }

func valStrings(n int, f func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func valMap(n int, f func(i int) (string, string)) map[string]string {
	out := map[string]string{}
	for i := 0; i < n; i++ {
		k, v := f(i)
		out[k] = v
	}
	return out
}

// valSnapshot is every observable answer a refused request must not change.
type valSnapshot struct {
	stored                                        apiStored
	serversA, serversAlice, serversB, creds, cred string
}

func valTake(tb testing.TB, env *vaulttest.Env, st func() apiStored, srv, cred string) valSnapshot {
	tb.Helper()
	get := func(w apiWho, path string) string {
		r := w.do(tb, env, "GET", path, nil)
		return fmt.Sprintf("%d %s", r.Status, r.Body)
	}
	return valSnapshot{
		stored:       st(),
		serversA:     get(apiCallerA, "/servers?limit=100"),
		serversAlice: get(apiWho{User: "alice"}, "/servers?limit=100"),
		serversB:     get(apiWho{Key: vaulttest.KeyB}, "/servers?limit=100"),
		creds:        get(apiCallerA, "/servers/"+srv+"/credentials?limit=100"),
		cred:         get(apiCallerA, "/servers/"+srv+"/credentials/"+cred),
	}
}

func TestValidation(t *testing.T) {
	// The data-key pool off: it stores and destroys keys in the background
	// (and a refused create discards the key its intent took), which would
	// change the keys stream this test watches for writes.
	env := vaulttest.MustStart(t, vaulttest.Options{KeyPool: -1})
	store := apiMustStore(t, env)
	srv := apiMustCreateServer(t, env, apiCallerA, nil)["id"].(string)
	cred := apiMustCreateCredential(t, env, apiCallerA, srv, map[string]any{"name": "fixture", "bearer_token": "fixture-token-1234"})["id"].(string)
	otherSrv := "mcp_srv_" + apiRandomHex(t)
	otherCred := "mcp_cred_" + apiRandomHex(t)

	srvBody := map[string]any{"name": "Linear", "server_label": "linear", "server_url": "https://mcp.linear.app/mcp"}
	s := func(kv ...any) map[string]any { return valWith(srvBody, kv...) }
	c := func(kv ...any) map[string]any { return valWith(map[string]any{"name": "n"}, kv...) }
	const (
		inv  = "invalid_request_error"
		auth = "authentication_error"
		nf   = "not_found_error"
	)
	mib := 1 << 20
	big := `{"name":"` + valRepeat("a", mib) + `"}` // over 1 MiB
	exact := `{"name":"x","server_label":"l","server_url":"https://e.example"}`
	exact += valRepeat(" ", mib-len(exact)) // exactly 1 MiB

	cases := []valCase{
		// ---- body syntax (createServer) ----
		{name: "malformed JSON", method: "POST", path: "/servers", body: `{"name":`, status: 400, typ: inv},
		{name: "not JSON at all", method: "POST", path: "/servers", body: `name=Linear`, status: 400, typ: inv},
		{name: "trailing object", method: "POST", path: "/servers", body: `{"name":"a","server_label":"l","server_url":"https://e.example"} {}`, status: 400, typ: inv},
		{name: "trailing garbage", method: "POST", path: "/servers", body: `{"name":"a","server_label":"l","server_url":"https://e.example"}x`, status: 400, typ: inv},
		{name: "trailing comma data", method: "POST", path: "/servers", body: `{"name":"a","server_label":"l","server_url":"https://e.example"},`, status: 400, typ: inv},
		{name: "array body", method: "POST", path: "/servers", body: `[{"name":"a","server_label":"l","server_url":"https://e.example"}]`, status: 400, typ: inv},
		{name: "string body", method: "POST", path: "/servers", body: `"x"`, status: 400, typ: inv},
		{name: "null body", method: "POST", path: "/servers", body: `null`, status: 400, typ: inv},
		{name: "number body", method: "POST", path: "/servers", body: `42`, status: 400, typ: inv},
		{name: "empty body", method: "POST", path: "/servers", body: ``, status: 400, typ: inv},
		{name: "unknown field", method: "POST", path: "/servers", body: s("nope", 1), status: 400, typ: inv, param: "nope"},
		{name: "unknown field id", method: "POST", path: "/servers", body: s("id", "mcp_srv_"+valRepeat("0", 32)), status: 400, typ: inv, param: "id"},
		{name: "unknown field created_at", method: "POST", path: "/servers", body: s("created_at", "2026-01-01T00:00:00Z"), status: 400, typ: inv, param: "created_at"},
		{name: "field names are case-sensitive", method: "POST", path: "/servers", body: s("Name", "x"), status: 400, typ: inv, param: "Name"},

		// ---- createServer: wrong types ----
		{name: "name number", method: "POST", path: "/servers", body: s("name", 1), status: 400, typ: inv, param: "name"},
		{name: "name array", method: "POST", path: "/servers", body: s("name", []string{"a"}), status: 400, typ: inv, param: "name"},
		{name: "server_label bool", method: "POST", path: "/servers", body: s("server_label", true), status: 400, typ: inv, param: "server_label"},
		{name: "server_url object", method: "POST", path: "/servers", body: s("server_url", map[string]any{}), status: 400, typ: inv, param: "server_url"},
		{name: "server_description number", method: "POST", path: "/servers", body: s("server_description", 5), status: 400, typ: inv, param: "server_description"},
		{name: "allowed_tools string", method: "POST", path: "/servers", body: s("allowed_tools", "issues.list"), status: 400, typ: inv, param: "allowed_tools"},
		{name: "allowed_tools numbers", method: "POST", path: "/servers", body: s("allowed_tools", []int{1}), status: 400, typ: inv, param: "allowed_tools"},
		{name: "allowed_tools null item", method: "POST", path: "/servers", body: `{"name":"a","server_label":"l","server_url":"https://e.example","allowed_tools":[null]}`, status: 400, typ: inv, param: "allowed_tools"},
		{name: "require_approval bool", method: "POST", path: "/servers", body: s("require_approval", true), status: 400, typ: inv, param: "require_approval"},
		{name: "metadata array", method: "POST", path: "/servers", body: s("metadata", []string{}), status: 400, typ: inv, param: "metadata"},
		{name: "metadata number value", method: "POST", path: "/servers", body: s("metadata", map[string]any{"a": 1}), status: 400, typ: inv, param: "metadata"},
		{name: "metadata nested value", method: "POST", path: "/servers", body: s("metadata", map[string]any{"a": map[string]any{}}), status: 400, typ: inv, param: "metadata"},

		// ---- createServer: required and rules ----
		{name: "name missing", method: "POST", path: "/servers", body: s("name", valAbsent), status: 400, typ: inv, param: "name"},
		{name: "server_label missing", method: "POST", path: "/servers", body: s("server_label", valAbsent), status: 400, typ: inv, param: "server_label"},
		{name: "server_url missing", method: "POST", path: "/servers", body: s("server_url", valAbsent), status: 400, typ: inv, param: "server_url"},
		{name: "name null", method: "POST", path: "/servers", body: s("name", nil), status: 400, typ: inv, param: "name"},
		{name: "name empty", method: "POST", path: "/servers", body: s("name", ""), status: 400, typ: inv, param: "name"},
		{name: "name 256", method: "POST", path: "/servers", body: s("name", valRepeat("a", 256)), status: 400, typ: inv, param: "name"},
		{name: "name 256 runes", method: "POST", path: "/servers", body: s("name", valRepeat("é", 256)), status: 400, typ: inv, param: "name"},
		{name: "name 255 ok", method: "POST", path: "/servers", body: s("name", valRepeat("a", 255)), status: 201},
		{name: "name 255 runes ok", method: "POST", path: "/servers", body: s("name", valRepeat("é", 255)), status: 201},
		{name: "server_label null", method: "POST", path: "/servers", body: s("server_label", nil), status: 400, typ: inv, param: "server_label"},
		{name: "server_label empty", method: "POST", path: "/servers", body: s("server_label", ""), status: 400, typ: inv, param: "server_label"},
		{name: "server_label 256", method: "POST", path: "/servers", body: s("server_label", valRepeat("a", 256)), status: 400, typ: inv, param: "server_label"},
		{name: "server_label space", method: "POST", path: "/servers", body: s("server_label", "my label"), status: 400, typ: inv, param: "server_label"},
		{name: "server_label slash", method: "POST", path: "/servers", body: s("server_label", "a/b"), status: 400, typ: inv, param: "server_label"},
		{name: "server_label non-ascii", method: "POST", path: "/servers", body: s("server_label", "línear"), status: 400, typ: inv, param: "server_label"},
		{name: "server_label newline", method: "POST", path: "/servers", body: s("server_label", "linear\n"), status: 400, typ: inv, param: "server_label"},
		{name: "server_label 255 ok", method: "POST", path: "/servers", body: s("server_label", "A-z_0."+valRepeat("a", 249)), status: 201},
		{name: "server_url null", method: "POST", path: "/servers", body: s("server_url", nil), status: 400, typ: inv, param: "server_url"},
		{name: "server_url empty", method: "POST", path: "/servers", body: s("server_url", ""), status: 400, typ: inv, param: "server_url"},
		{name: "server_url ftp", method: "POST", path: "/servers", body: s("server_url", "ftp://mcp.linear.app/mcp"), status: 400, typ: inv, param: "server_url"},
		{name: "server_url javascript", method: "POST", path: "/servers", body: s("server_url", "javascript:alert(1)"), status: 400, typ: inv, param: "server_url"},
		{name: "server_url relative", method: "POST", path: "/servers", body: s("server_url", "/mcp"), status: 400, typ: inv, param: "server_url"},
		{name: "server_url no scheme", method: "POST", path: "/servers", body: s("server_url", "mcp.linear.app/mcp"), status: 400, typ: inv, param: "server_url"},
		{name: "server_url no host", method: "POST", path: "/servers", body: s("server_url", "https://"), status: 400, typ: inv, param: "server_url"},
		{name: "server_url bad host", method: "POST", path: "/servers", body: s("server_url", "https://exa mple.com/"), status: 400, typ: inv, param: "server_url"},
		{name: "server_url 2049", method: "POST", path: "/servers", body: s("server_url", "https://e.example/"+valRepeat("a", 2049-18)), status: 400, typ: inv, param: "server_url"},
		{name: "server_url 2048 ok", method: "POST", path: "/servers", body: s("server_url", "https://e.example/"+valRepeat("a", 2048-18)), status: 201},
		{name: "server_url http ok", method: "POST", path: "/servers", body: s("server_url", "http://localhost:8080/mcp"), status: 201},
		{name: "server_description 10001", method: "POST", path: "/servers", body: s("server_description", valRepeat("d", 10001)), status: 400, typ: inv, param: "server_description"},
		{name: "server_description 10000 ok", method: "POST", path: "/servers", body: s("server_description", valRepeat("d", 10000)), status: 201},
		{name: "allowed_tools 1001", method: "POST", path: "/servers", body: s("allowed_tools", valStrings(1001, func(i int) string { return fmt.Sprint("t", i) })), status: 400, typ: inv, param: "allowed_tools"},
		{name: "allowed_tools 1000 ok", method: "POST", path: "/servers", body: s("allowed_tools", valStrings(1000, func(i int) string { return fmt.Sprint("t", i) })), status: 201},
		{name: "allowed_tools empty name", method: "POST", path: "/servers", body: s("allowed_tools", []string{"a", ""}), status: 400, typ: inv, param: "allowed_tools"},
		{name: "allowed_tools name 256", method: "POST", path: "/servers", body: s("allowed_tools", []string{valRepeat("t", 256)}), status: 400, typ: inv, param: "allowed_tools"},
		{name: "allowed_tools name 255 ok", method: "POST", path: "/servers", body: s("allowed_tools", []string{valRepeat("t", 255)}), status: 201},
		{name: "allowed_tools duplicate", method: "POST", path: "/servers", body: s("allowed_tools", []string{"a", "b", "a"}), status: 400, typ: inv, param: "allowed_tools"},
		{name: "require_approval other", method: "POST", path: "/servers", body: s("require_approval", "sometimes"), status: 400, typ: inv, param: "require_approval"},
		{name: "require_approval empty", method: "POST", path: "/servers", body: s("require_approval", ""), status: 400, typ: inv, param: "require_approval"},
		{name: "require_approval upper", method: "POST", path: "/servers", body: s("require_approval", "ALWAYS"), status: 400, typ: inv, param: "require_approval"},
		{name: "require_approval null", method: "POST", path: "/servers", body: s("require_approval", nil), status: 400, typ: inv, param: "require_approval"},
		{name: "metadata null", method: "POST", path: "/servers", body: s("metadata", nil), status: 400, typ: inv, param: "metadata"},
		{name: "metadata 17 pairs", method: "POST", path: "/servers", body: s("metadata", valMap(17, func(i int) (string, string) { return fmt.Sprint("k", i), "v" })), status: 400, typ: inv, param: "metadata"},
		{name: "metadata empty key", method: "POST", path: "/servers", body: s("metadata", map[string]string{"": "v"}), status: 400, typ: inv, param: "metadata"},
		{name: "metadata key 65", method: "POST", path: "/servers", body: s("metadata", map[string]string{valRepeat("k", 65): "v"}), status: 400, typ: inv, param: "metadata"},
		{name: "metadata value 513", method: "POST", path: "/servers", body: s("metadata", map[string]string{"k": valRepeat("v", 513)}), status: 400, typ: inv, param: "metadata"},
		{name: "metadata limits ok", method: "POST", path: "/servers", body: s("metadata", valMap(16, func(i int) (string, string) {
			return fmt.Sprintf("%02d", i) + valRepeat("k", 62), valRepeat("v", 512)
		})), status: 201},
		{name: "metadata empty value ok", method: "POST", path: "/servers", body: s("metadata", map[string]string{"k": ""}), status: 201},

		// ---- updateServer ----
		{name: "update malformed", method: "POST", path: "/servers/{srv}", body: `{"name"`, status: 400, typ: inv},
		{name: "update trailing", method: "POST", path: "/servers/{srv}", body: `{"name":"x"}{"name":"y"}`, status: 400, typ: inv},
		{name: "update array", method: "POST", path: "/servers/{srv}", body: `[]`, status: 400, typ: inv},
		{name: "update empty body", method: "POST", path: "/servers/{srv}", body: ``, status: 400, typ: inv},
		{name: "update unknown field", method: "POST", path: "/servers/{srv}", body: map[string]any{"name": "x", "colour": "red"}, status: 400, typ: inv, param: "colour"},
		{name: "update name null", method: "POST", path: "/servers/{srv}", body: map[string]any{"name": nil}, status: 400, typ: inv, param: "name"},
		{name: "update server_label null", method: "POST", path: "/servers/{srv}", body: map[string]any{"server_label": nil}, status: 400, typ: inv, param: "server_label"},
		{name: "update server_url null", method: "POST", path: "/servers/{srv}", body: map[string]any{"server_url": nil}, status: 400, typ: inv, param: "server_url"},
		{name: "update require_approval null", method: "POST", path: "/servers/{srv}", body: map[string]any{"require_approval": nil}, status: 400, typ: inv, param: "require_approval"},
		{name: "update metadata null", method: "POST", path: "/servers/{srv}", body: map[string]any{"metadata": nil}, status: 400, typ: inv, param: "metadata"},
		{name: "update name empty", method: "POST", path: "/servers/{srv}", body: map[string]any{"name": ""}, status: 400, typ: inv, param: "name"},
		{name: "update name type", method: "POST", path: "/servers/{srv}", body: map[string]any{"name": 7}, status: 400, typ: inv, param: "name"},
		{name: "update label", method: "POST", path: "/servers/{srv}", body: map[string]any{"server_label": "a b"}, status: 400, typ: inv, param: "server_label"},
		{name: "update url", method: "POST", path: "/servers/{srv}", body: map[string]any{"server_url": "ftp://x"}, status: 400, typ: inv, param: "server_url"},
		{name: "update description", method: "POST", path: "/servers/{srv}", body: map[string]any{"server_description": valRepeat("d", 10001)}, status: 400, typ: inv, param: "server_description"},
		{name: "update tools dup", method: "POST", path: "/servers/{srv}", body: map[string]any{"allowed_tools": []string{"a", "a"}}, status: 400, typ: inv, param: "allowed_tools"},
		{name: "update approval", method: "POST", path: "/servers/{srv}", body: map[string]any{"require_approval": "no"}, status: 400, typ: inv, param: "require_approval"},
		{name: "update metadata", method: "POST", path: "/servers/{srv}", body: map[string]any{"metadata": map[string]string{"": "v"}}, status: 400, typ: inv, param: "metadata"},
		{name: "update one bad field changes nothing", method: "POST", path: "/servers/{srv}", body: map[string]any{"name": "changed", "server_url": "nope"}, status: 400, typ: inv, param: "server_url"},
		{name: "update 415", method: "POST", path: "/servers/{srv}", body: `{"name":"x"}`, ctype: "text/plain", status: 415, typ: inv},
		{name: "update 413", method: "POST", path: "/servers/{srv}", body: big, status: 413, typ: inv},

		// ---- createCredential: syntax and types ----
		{name: "cred malformed", method: "POST", path: "/servers/{srv}/credentials", body: `{"bearer_token":"x"`, status: 400, typ: inv},
		{name: "cred trailing", method: "POST", path: "/servers/{srv}/credentials", body: `{"bearer_token":"x"} {"bearer_token":"y"}`, status: 400, typ: inv},
		{name: "cred array", method: "POST", path: "/servers/{srv}/credentials", body: `[{"bearer_token":"x"}]`, status: 400, typ: inv},
		{name: "cred empty body", method: "POST", path: "/servers/{srv}/credentials", body: ``, status: 400, typ: inv},
		{name: "cred unknown field", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", "x", "token", "y"), status: 400, typ: inv, param: "token"},
		{name: "cred unknown field server_id", method: "POST", path: "/servers/{srv}/credentials", body: c("server_id", "{srv}"), status: 400, typ: inv, param: "server_id"},
		{name: "cred name number", method: "POST", path: "/servers/{srv}/credentials", body: c("name", 5), status: 400, typ: inv, param: "name"},
		{name: "cred auth_type number", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", 1), status: 400, typ: inv, param: "auth_type"},
		{name: "cred bearer_token number", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", 12345678901234), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred authorization bool", method: "POST", path: "/servers/{srv}/credentials", body: c("authorization", true), status: 400, typ: inv, param: "authorization"},
		{name: "cred headers string", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", "X-Key: v"), status: 400, typ: inv, param: "headers"},
		{name: "cred headers array", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", []string{"X-Key"}), status: 400, typ: inv, param: "headers"},
		{name: "cred headers number value", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]any{"X-Key": 1}), status: 400, typ: inv, param: "headers"},
		{name: "cred expires_at number", method: "POST", path: "/servers/{srv}/credentials", body: c("expires_at", 4102444800), status: 400, typ: inv, param: "expires_at"},

		// ---- createCredential: rules ----
		{name: "cred name empty", method: "POST", path: "/servers/{srv}/credentials", body: c("name", ""), status: 400, typ: inv, param: "name"},
		{name: "cred name 256", method: "POST", path: "/servers/{srv}/credentials", body: c("name", valRepeat("n", 256)), status: 400, typ: inv, param: "name"},
		{name: "cred name 255 ok", method: "POST", path: "/servers/{srv}/credentials", body: c("name", valRepeat("n", 255)), status: 201},
		{name: "cred auth_type unknown", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "basic"), status: 400, typ: inv, param: "auth_type"},
		{name: "cred auth_type case", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "Bearer", "bearer_token", "x"), status: 400, typ: inv, param: "auth_type"},
		{name: "cred auth_type empty", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", ""), status: 400, typ: inv, param: "auth_type"},
		{name: "cred auth_type null", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", nil), status: 400, typ: inv, param: "auth_type"},
		{name: "cred bearer missing token", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "bearer"), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred bearer with authorization", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "bearer", "bearer_token", "x", "authorization", "y"), status: 400, typ: inv, param: "authorization"},
		{name: "cred bearer with headers", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "bearer", "bearer_token", "x", "headers", map[string]string{"X-A": "1"}), status: 400, typ: inv, param: "headers"},
		{name: "cred none with bearer_token", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "none", "bearer_token", "x"), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred authorization with bearer_token", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "authorization", "authorization", "x", "bearer_token", "y"), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred headers with authorization", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "headers", "headers", map[string]string{"X-A": "1"}, "authorization", "y"), status: 400, typ: inv, param: "authorization"},
		{name: "cred two secrets inferred", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", "x", "authorization", "y"), status: 400, typ: inv, param: "auth_type"},
		{name: "cred bearer_token null", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", nil), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred bearer_token empty", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", ""), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred bearer_token 8193", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", valRepeat("t", 8193)), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred bearer_token 8192 ok", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", valRepeat("t", 8192)), status: 201},
		{name: "cred bearer_token CRLF", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", "tok\r\nX-Injected: 1"), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred bearer_token NUL", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", "tok\x00en"), status: 400, typ: inv, param: "bearer_token"},
		{name: "cred authorization missing", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "authorization"), status: 400, typ: inv, param: "authorization"},
		{name: "cred authorization empty", method: "POST", path: "/servers/{srv}/credentials", body: c("authorization", ""), status: 400, typ: inv, param: "authorization"},
		{name: "cred authorization 8193", method: "POST", path: "/servers/{srv}/credentials", body: c("authorization", valRepeat("a", 8193)), status: 400, typ: inv, param: "authorization"},
		{name: "cred authorization 8192 ok", method: "POST", path: "/servers/{srv}/credentials", body: c("authorization", valRepeat("a", 8192)), status: 201},
		{name: "cred authorization LF", method: "POST", path: "/servers/{srv}/credentials", body: c("authorization", "Basic x\nHost: evil"), status: 400, typ: inv, param: "authorization"},
		{name: "cred headers missing", method: "POST", path: "/servers/{srv}/credentials", body: c("auth_type", "headers"), status: 400, typ: inv, param: "headers"},
		{name: "cred headers null", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", nil), status: 400, typ: inv, param: "headers"},
		{name: "cred headers empty", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{}), status: 400, typ: inv, param: "headers"},
		{name: "cred headers 33", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", valMap(33, func(i int) (string, string) { return fmt.Sprint("X-H", i), "v" })), status: 400, typ: inv, param: "headers"},
		{name: "cred headers 32 ok", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", valMap(32, func(i int) (string, string) { return fmt.Sprint("X-H", i), "v" })), status: 201},
		{name: "cred header name space", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X Key": "v"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header name colon", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Key:": "v"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header name empty", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"": "v"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header name non-ascii", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Ключ": "v"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header name 257", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{valRepeat("x", 257): "v"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header name 256 ok", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{valRepeat("x", 256): "v"}), status: 201},
		{name: "cred header token chars ok", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-!#$%&'*+-.^_`|~09az": "v"}), status: 201},
		{name: "cred header duplicate case", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Api-Key": "1", "x-api-key": "2"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header value empty", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Key": ""}), status: 400, typ: inv, param: "headers"},
		{name: "cred header value CR", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Key": "a\rb"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header value LF", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Key": "a\nb"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header value NUL", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Key": "a\x00b"}), status: 400, typ: inv, param: "headers"},
		{name: "cred header value 8193", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Key": valRepeat("v", 8193)}), status: 400, typ: inv, param: "headers"},
		{name: "cred header value 8192 ok", method: "POST", path: "/servers/{srv}/credentials", body: c("headers", map[string]string{"X-Key": valRepeat("v", 8192)}), status: 201},
		{name: "cred expires_at past", method: "POST", path: "/servers/{srv}/credentials", body: c("expires_at", "2000-01-01T00:00:00Z"), status: 400, typ: inv, param: "expires_at"},
		{name: "cred expires_at now-ish", method: "POST", path: "/servers/{srv}/credentials", body: c("expires_at", time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)), status: 400, typ: inv, param: "expires_at"},
		{name: "cred expires_at not a date", method: "POST", path: "/servers/{srv}/credentials", body: c("expires_at", "tomorrow"), status: 400, typ: inv, param: "expires_at"},
		{name: "cred expires_at empty", method: "POST", path: "/servers/{srv}/credentials", body: c("expires_at", ""), status: 400, typ: inv, param: "expires_at"},
		{name: "cred expires_at date only", method: "POST", path: "/servers/{srv}/credentials", body: c("expires_at", "2099-01-01"), status: 400, typ: inv, param: "expires_at"},
		{name: "cred expires_at no zone", method: "POST", path: "/servers/{srv}/credentials", body: c("expires_at", "2099-01-01T00:00:00"), status: 400, typ: inv, param: "expires_at"},
		{name: "cred expires_at month 13", method: "POST", path: "/servers/{srv}/credentials", body: c("expires_at", "2099-13-01T00:00:00Z"), status: 400, typ: inv, param: "expires_at"},
		{name: "cred 415", method: "POST", path: "/servers/{srv}/credentials", body: `{"bearer_token":"x"}`, ctype: "text/plain", status: 415, typ: inv},
		{name: "cred 413", method: "POST", path: "/servers/{srv}/credentials", body: `{"bearer_token":"` + valRepeat("t", mib) + `"}`, status: 413, typ: inv},
		{name: "cred unknown server", method: "POST", path: "/servers/" + otherSrv + "/credentials", body: c("bearer_token", "x"), status: 404, typ: nf},

		// ---- revoke body ----
		{name: "revoke unknown field", method: "POST", path: "/servers/{srv}/credentials/{cred}/revoke", body: `{"reason":"x"}`, status: 400, typ: inv, param: "reason"},
		{name: "revoke array", method: "POST", path: "/servers/{srv}/credentials/{cred}/revoke", body: `[]`, status: 400, typ: inv},
		{name: "revoke malformed", method: "POST", path: "/servers/{srv}/credentials/{cred}/revoke", body: `{`, status: 400, typ: inv},
		{name: "revoke trailing", method: "POST", path: "/servers/{srv}/credentials/{cred}/revoke", body: `{}{}`, status: 400, typ: inv},
		{name: "revoke 415", method: "POST", path: "/servers/{srv}/credentials/{cred}/revoke", body: `{}`, ctype: "text/plain", status: 415, typ: inv},
		{name: "revoke 413", method: "POST", path: "/servers/{srv}/credentials/{cred}/revoke", body: big, status: 413, typ: inv},

		// ---- sizes and media types ----
		{name: "413 over 1 MiB", method: "POST", path: "/servers", body: big, status: 413, typ: inv},
		{name: "413 one byte over", method: "POST", path: "/servers", body: exact + " ", status: 413, typ: inv},
		{name: "exactly 1 MiB ok", method: "POST", path: "/servers", body: exact, status: 201},
		{name: "415 text/plain", method: "POST", path: "/servers", body: `{"name":"a","server_label":"l","server_url":"https://e.example"}`, ctype: "text/plain", status: 415, typ: inv},
		{name: "415 form", method: "POST", path: "/servers", body: `name=a`, ctype: "application/x-www-form-urlencoded", status: 415, typ: inv},
		{name: "415 no content type", method: "POST", path: "/servers", body: `{"name":"a","server_label":"l","server_url":"https://e.example"}`, ctype: "-", status: 415, typ: inv},
		{name: "415 json lookalike", method: "POST", path: "/servers", body: `{"name":"a","server_label":"l","server_url":"https://e.example"}`, ctype: "application/jsonx", status: 415, typ: inv},
		{name: "415 xml", method: "POST", path: "/servers", body: `<server/>`, ctype: "application/xml", status: 415, typ: inv},
		{name: "json with charset ok", method: "POST", path: "/servers", body: srvBody, ctype: "application/json; charset=utf-8", status: 201},
		{name: "json upper case ok", method: "POST", path: "/servers", body: srvBody, ctype: "Application/JSON", status: 201},

		// ---- authentication ----
		{name: "401 no key", method: "GET", path: "/servers", auth: "-", status: 401, typ: auth},
		{name: "401 empty header", method: "GET", path: "/servers", auth: "", header: map[string]string{"Authorization": ""}, status: 401, typ: auth},
		{name: "401 bearer without key", method: "GET", path: "/servers", auth: "Bearer", status: 401, typ: auth},
		{name: "401 bearer blank key", method: "GET", path: "/servers", auth: "Bearer    ", status: 401, typ: auth},
		{name: "401 basic", method: "GET", path: "/servers", auth: "Basic c2stdGVzdDp4", status: 401, typ: auth},
		{name: "401 key without scheme", method: "GET", path: "/servers", auth: vaulttest.KeyA, status: 401, typ: auth},
		{name: "401 unknown key", method: "GET", path: "/servers", auth: "Bearer sk-nope", status: 401, typ: auth},
		{name: "401 key prefix", method: "GET", path: "/servers", auth: "Bearer " + vaulttest.KeyA[:len(vaulttest.KeyA)-1], status: 401, typ: auth},
		{name: "401 key suffix", method: "GET", path: "/servers", auth: "Bearer " + vaulttest.KeyA + "0", status: 401, typ: auth},
		{name: "401 two keys", method: "GET", path: "/servers", auth: "Bearer " + vaulttest.KeyA + " " + vaulttest.KeyB, status: 401, typ: auth},
		{name: "401 on create", method: "POST", path: "/servers", body: srvBody, auth: "-", status: 401, typ: auth},
		{name: "401 before body checks", method: "POST", path: "/servers", body: `{`, auth: "Bearer wrong", status: 401, typ: auth},
		{name: "401 on credential create", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", "x"), auth: "Bearer wrong", status: 401, typ: auth},
		{name: "401 on get", method: "GET", path: "/servers/{srv}/credentials/{cred}", auth: "-", status: 401, typ: auth},
		{name: "401 on revoke", method: "POST", path: "/servers/{srv}/credentials/{cred}/revoke", auth: "Bearer wrong", status: 401, typ: auth},
		{name: "401 on delete", method: "DELETE", path: "/servers/{srv}", auth: "-", status: 401, typ: auth},
		{name: "401 before X-On-Behalf-Of", method: "GET", path: "/servers", auth: "-", header: map[string]string{"X-On-Behalf-Of": ""}, status: 401, typ: auth},

		// ---- X-On-Behalf-Of ----
		{name: "on-behalf-of empty", method: "GET", path: "/servers", header: map[string]string{"X-On-Behalf-Of": ""}, status: 400, typ: inv, param: "X-On-Behalf-Of"},
		{name: "on-behalf-of 256", method: "GET", path: "/servers", header: map[string]string{"X-On-Behalf-Of": valRepeat("u", 256)}, status: 400, typ: inv, param: "X-On-Behalf-Of"},
		{name: "on-behalf-of empty on create", method: "POST", path: "/servers", body: srvBody, header: map[string]string{"X-On-Behalf-Of": ""}, status: 400, typ: inv, param: "X-On-Behalf-Of"},
		{name: "on-behalf-of 256 on create", method: "POST", path: "/servers", body: srvBody, header: map[string]string{"X-On-Behalf-Of": valRepeat("u", 256)}, status: 400, typ: inv, param: "X-On-Behalf-Of"},
		{name: "on-behalf-of 256 on credential", method: "POST", path: "/servers/{srv}/credentials", body: c("bearer_token", "x"), header: map[string]string{"X-On-Behalf-Of": valRepeat("u", 256)}, status: 400, typ: inv, param: "X-On-Behalf-Of"},
		{name: "on-behalf-of 255 ok", method: "GET", path: "/servers", header: map[string]string{"X-On-Behalf-Of": valRepeat("u", 255)}, status: 200},
		{name: "on-behalf-of 255 runes ok", method: "GET", path: "/servers", header: map[string]string{"X-On-Behalf-Of": valRepeat("ü", 255)}, status: 200},
		{name: "on-behalf-of 256 runes", method: "GET", path: "/servers", header: map[string]string{"X-On-Behalf-Of": valRepeat("ü", 256)}, status: 400, typ: inv, param: "X-On-Behalf-Of"},
		{name: "on-behalf-of tab", method: "GET", path: "/servers", header: map[string]string{"X-On-Behalf-Of": "a\tb"}, status: 400, typ: inv, param: "X-On-Behalf-Of"},

		// ---- list parameters ----
		{name: "limit 0", method: "GET", path: "/servers?limit=0", status: 400, typ: inv, param: "limit"},
		{name: "limit 101", method: "GET", path: "/servers?limit=101", status: 400, typ: inv, param: "limit"},
		{name: "limit abc", method: "GET", path: "/servers?limit=abc", status: 400, typ: inv, param: "limit"},
		{name: "limit negative", method: "GET", path: "/servers?limit=-1", status: 400, typ: inv, param: "limit"},
		{name: "limit fraction", method: "GET", path: "/servers?limit=1.5", status: 400, typ: inv, param: "limit"},
		{name: "limit empty", method: "GET", path: "/servers?limit=", status: 400, typ: inv, param: "limit"},
		{name: "limit 1 ok", method: "GET", path: "/servers?limit=1", status: 200},
		{name: "limit 100 ok", method: "GET", path: "/servers?limit=100", status: 200},
		{name: "order bad", method: "GET", path: "/servers?order=up", status: 400, typ: inv, param: "order"},
		{name: "order empty", method: "GET", path: "/servers?order=", status: 400, typ: inv, param: "order"},
		{name: "order asc ok", method: "GET", path: "/servers?order=asc", status: 200},
		{name: "after bad", method: "GET", path: "/servers?after=xyz", status: 400, typ: inv, param: "after"},
		{name: "after credential id", method: "GET", path: "/servers?after={cred}", status: 400, typ: inv, param: "after"},
		{name: "after upper hex", method: "GET", path: "/servers?after=" + strings.ToUpper("mcp_srv_"+apiRandomHex(t)), status: 400, typ: inv, param: "after"},
		{name: "before bad", method: "GET", path: "/servers?before=mcp_srv_123", status: 400, typ: inv, param: "before"},
		{name: "cred limit 0", method: "GET", path: "/servers/{srv}/credentials?limit=0", status: 400, typ: inv, param: "limit"},
		{name: "cred limit 101", method: "GET", path: "/servers/{srv}/credentials?limit=101", status: 400, typ: inv, param: "limit"},
		{name: "cred limit abc", method: "GET", path: "/servers/{srv}/credentials?limit=abc", status: 400, typ: inv, param: "limit"},
		{name: "cred order bad", method: "GET", path: "/servers/{srv}/credentials?order=DESC", status: 400, typ: inv, param: "order"},
		{name: "cred after server id", method: "GET", path: "/servers/{srv}/credentials?after={srv}", status: 400, typ: inv, param: "after"},
		{name: "cred before bad", method: "GET", path: "/servers/{srv}/credentials?before=mcp_cred_", status: 400, typ: inv, param: "before"},
		{name: "include_revoked bad", method: "GET", path: "/servers/{srv}/credentials?include_revoked=yes", status: 400, typ: inv, param: "include_revoked"},
		{name: "include_revoked 1", method: "GET", path: "/servers/{srv}/credentials?include_revoked=1", status: 400, typ: inv, param: "include_revoked"},
		{name: "include_revoked empty", method: "GET", path: "/servers/{srv}/credentials?include_revoked=", status: 400, typ: inv, param: "include_revoked"},
		{name: "include_revoked false ok", method: "GET", path: "/servers/{srv}/credentials?include_revoked=false", status: 200},

		// ---- unknown routes ----
		{name: "route unknown", method: "GET", path: "/nope", status: 404, typ: nf},
		{name: "route unknown no auth", method: "GET", path: "/nope", auth: "-", status: 404, typ: nf},
		{name: "route root", method: "GET", path: "!/", status: 404, typ: nf},
		{name: "route outside prefix", method: "GET", path: "!/api/v1/servers", status: 404, typ: nf},
		{name: "route prefix only", method: "GET", path: "", status: 404, typ: nf},
		{name: "route trailing slash", method: "GET", path: "/servers/", status: 404, typ: nf},
		{name: "route trailing slash post", method: "POST", path: "/servers/", body: srvBody, status: 404, typ: nf},
		{name: "route trailing slash credentials", method: "GET", path: "/servers/{srv}/credentials/", status: 404, typ: nf},
		{name: "route double slash", method: "GET", path: "//servers", status: 404, typ: nf},
		{name: "route PUT server", method: "PUT", path: "/servers/{srv}", body: map[string]any{"name": "x"}, status: 404, typ: nf},
		{name: "route PATCH server", method: "PATCH", path: "/servers/{srv}", body: map[string]any{"name": "x"}, status: 404, typ: nf},
		{name: "route DELETE servers", method: "DELETE", path: "/servers", status: 404, typ: nf},
		{name: "route GET revoke", method: "GET", path: "/servers/{srv}/credentials/{cred}/revoke", status: 404, typ: nf},
		{name: "route unknown action", method: "POST", path: "/servers/{srv}/credentials/{cred}/rotate", body: `{}`, status: 404, typ: nf},
		{name: "route unknown sub-resource", method: "GET", path: "/servers/{srv}/tools", status: 404, typ: nf},

		// ---- malformed path IDs are 404 ----
		{name: "id short", method: "GET", path: "/servers/mcp_srv_123", status: 404, typ: nf},
		{name: "id upper hex", method: "GET", path: "/servers/" + strings.ToUpper("mcp_srv_"+apiRandomHex(t)), status: 404, typ: nf},
		{name: "id upper hex only", method: "GET", path: "/servers/mcp_srv_" + strings.ToUpper(apiRandomHex(t)), status: 404, typ: nf},
		{name: "id non-hex", method: "GET", path: "/servers/mcp_srv_" + valRepeat("g", 32), status: 404, typ: nf},
		{name: "id 33 hex", method: "GET", path: "/servers/mcp_srv_" + valRepeat("a", 33), status: 404, typ: nf},
		{name: "id no prefix", method: "GET", path: "/servers/" + apiRandomHex(t), status: 404, typ: nf},
		{name: "id credential in server slot", method: "GET", path: "/servers/{cred}", status: 404, typ: nf},
		{name: "id server in credential slot", method: "GET", path: "/servers/{srv}/credentials/{srv}", status: 404, typ: nf},
		{name: "id NUL", method: "GET", path: "/servers/%00", status: 404, typ: nf},
		{name: "id dots", method: "GET", path: "/servers/..", status: 404, typ: nf},
		{name: "id quote", method: "GET", path: "/servers/mcp_srv_'%20OR%201=1--", status: 404, typ: nf},
		{name: "id very long", method: "GET", path: "/servers/mcp_srv_" + valRepeat("a", 4000), status: 404, typ: nf},
		{name: "id bad on update", method: "POST", path: "/servers/mcp_srv_x", body: map[string]any{"name": "x"}, status: 404, typ: nf},
		{name: "id bad on delete", method: "DELETE", path: "/servers/mcp_srv_x", status: 404, typ: nf},
		{name: "id bad on list credentials", method: "GET", path: "/servers/mcp_srv_x/credentials", status: 404, typ: nf},
		{name: "id bad on create credential", method: "POST", path: "/servers/mcp_srv_x/credentials", body: c("bearer_token", "x"), status: 404, typ: nf},
		{name: "id bad credential on get", method: "GET", path: "/servers/{srv}/credentials/mcp_cred_x", status: 404, typ: nf},
		{name: "id bad credential on revoke", method: "POST", path: "/servers/{srv}/credentials/mcp_cred_x/revoke", status: 404, typ: nf},
		{name: "id bad credential on delete", method: "DELETE", path: "/servers/{srv}/credentials/mcp_cred_x", status: 404, typ: nf},
		{name: "id bad server on get credential", method: "GET", path: "/servers/mcp_srv_x/credentials/{cred}", status: 404, typ: nf},
		{name: "id unknown credential", method: "GET", path: "/servers/{srv}/credentials/" + otherCred, status: 404, typ: nf},
		{name: "id unknown server", method: "GET", path: "/servers/" + otherSrv, status: 404, typ: nf},
	}

	getter := func() apiStored { return apiMustStored(t, store) }
	before := valTake(t, env, getter, srv, cred)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if m, ok := tc.body.(map[string]any); ok {
				for k, v := range m { // allow {srv} in bodies
					if v == "{srv}" {
						m[k] = srv
					}
				}
			}
			r := valSend(t, env, tc, srv, cred)
			if tc.status < 400 {
				if r.Status != tc.status {
					t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Body)
				}
				before = valTake(t, env, getter, srv, cred)
				return
			}
			e := apiMustError(t, r, tc.status, tc.typ, tc.param)
			if tc.code != "" && e["code"] != tc.code {
				t.Errorf("code %v, want %q", e["code"], tc.code)
			}
			if tc.status == 401 && bytes.Contains(r.Body, []byte("sk-")) {
				t.Errorf("401 echoes the key: %s", r.Body)
			}
			after := valTake(t, env, getter, srv, cred)
			if after != before {
				t.Errorf("a refused request changed what is stored:\nbefore %+v\nafter  %+v", before, after)
				before = after
			}
		})
	}
}

// valRawExchange writes head, then streams body (chunked when chunked is
// set) on a raw connection while reading the answer; it returns as soon as
// the answer is complete, whether or not the body was consumed.
func valRawExchange(tb testing.TB, env *vaulttest.Env, head string, body io.Reader, chunked bool) (*http.Response, []byte) {
	tb.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(env.URL, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		tb.Fatal(err)
	}
	go func() { // write errors are expected once the server has answered and closed
		if _, err := io.WriteString(conn, head); err != nil {
			return
		}
		if chunked {
			cw := httputil.NewChunkedWriter(conn)
			if _, err := io.Copy(cw, body); err != nil {
				return
			}
			_ = cw.Close()
			_, _ = io.WriteString(conn, "\r\n")
			return
		}
		_, _ = io.Copy(conn, body)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatalf("reading the answer: %v", err)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading the answer body: %v", err)
	}
	return resp, raw
}

// valEndless yields '{"name":"aaaa…' forever.
type valEndless struct{ started bool }

func (e *valEndless) Read(p []byte) (int, error) {
	n := 0
	if !e.started {
		n = copy(p, `{"name":"`)
		e.started = true
	}
	for i := n; i < len(p); i++ {
		p[i] = 'a'
	}
	return len(p), nil
}

// TestBodyLimitWithoutContentLength: a body over 1 MiB is refused with 413
// also when it is chunked (no Content-Length), and the limit is enforced
// while reading — an endless body still gets its answer.
func TestBodyLimitWithoutContentLength(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	store := apiMustStore(t, env)
	srv := apiMustCreateServer(t, env, apiCallerA, nil)["id"].(string)
	beforeStored := apiMustStored(t, store)
	host := strings.TrimPrefix(env.URL, "http://")
	head := func(path, extra string) string {
		return "POST /api/v1/llm/mcp" + path + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + vaulttest.KeyA +
			"\r\nContent-Type: application/json\r\n" + extra + "\r\n"
	}
	check := func(name string, resp *http.Response, raw []byte) {
		t.Helper()
		r := vaulttest.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
		apiMustError(t, r, http.StatusRequestEntityTooLarge, "invalid_request_error", nil)
		if t.Failed() {
			t.Logf("case %s", name)
		}
	}

	// 2 MiB, chunked, no Content-Length.
	twoMiB := io.MultiReader(strings.NewReader(`{"name":"`), strings.NewReader(valRepeat("a", 2<<20)),
		strings.NewReader(`","server_label":"l","server_url":"https://e.example"}`))
	resp, raw := valRawExchange(t, env, head("/servers", "Transfer-Encoding: chunked\r\n"), twoMiB, true)
	check("chunked 2 MiB", resp, raw)

	// The same through net/http's client with an io.Reader of unknown length.
	body := io.MultiReader(strings.NewReader(`{"bearer_token":"`), strings.NewReader(valRepeat("t", 2<<20)), strings.NewReader(`"}`))
	req, err := http.NewRequest("POST", env.URL+"/api/v1/llm/mcp/servers/"+srv+"/credentials", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+vaulttest.KeyA)
	req.Header.Set("Content-Type", "application/json")
	if hr, err := valClient.Do(req); err == nil { // the server may close before the client finished writing
		hraw, _ := io.ReadAll(hr.Body)
		hr.Body.Close()
		if len(hr.TransferEncoding) != 0 || hr.StatusCode != http.StatusRequestEntityTooLarge {
			t.Logf("client answer %d %s", hr.StatusCode, hraw)
		}
		check("client chunked", hr, hraw)
	}

	// An endless chunked body: the answer comes without reading it all.
	resp, raw = valRawExchange(t, env, head("/servers", "Transfer-Encoding: chunked\r\n"), &valEndless{}, true)
	check("endless chunked", resp, raw)

	// A declared Content-Length over 1 MiB is refused before the body arrives.
	resp, raw = valRawExchange(t, env, head("/servers", fmt.Sprintf("Content-Length: %d\r\n", 10<<20)), strings.NewReader(`{"name":"`), false)
	check("declared 10 MiB", resp, raw)

	if after := apiMustStored(t, store); after != beforeStored {
		t.Errorf("a refused body stored something: %+v -> %+v", beforeStored, after)
	}
	if l := apiMustList(t, env, apiCallerA, "/servers"); len(l.IDs) != 1 || l.IDs[0] != srv {
		t.Errorf("servers after refused bodies: %v", l.IDs)
	}
	if l := apiMustList(t, env, apiCallerA, "/servers/"+srv+"/credentials"); len(l.IDs) != 0 {
		t.Errorf("credentials after refused bodies: %v", l.IDs)
	}
}
