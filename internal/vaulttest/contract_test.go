package vaulttest

import (
	"net/http"
	"strings"
	"testing"
)

// TestContractCatchesDrift proves the OpenAPI check is not a rubber stamp:
// answers that differ from the document in a field, a type, a status or a
// header are refused, and the ones it describes pass.
func TestContractCatchesDrift(t *testing.T) {
	const base = "http://127.0.0.1:1/api/v1/llm/mcp"
	const srv = `{"id":"mcp_srv_0194f3a2b1c47d8e9f00112233445566","object":"mcp.server","name":"Linear","server_label":"linear",` +
		`"server_url":"https://mcp.linear.app/mcp","server_description":null,"allowed_tools":null,"require_approval":"always",` +
		`"metadata":{},"created_at":"2026-04-29T12:00:00.000Z","updated_at":"2026-04-29T12:00:00.000Z"}`
	const errBody = `{"error":{"message":"No such MCP server.","type":"not_found_error","param":null,"code":null}}`
	json := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	withHeader := func(k, v string) http.Header {
		h := json.Clone()
		h.Set(k, v)
		return h
	}
	cases := []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		ok                 bool
	}{
		{"server as documented", "GET", "/servers/mcp_srv_0194f3a2b1c47d8e9f00112233445566", 200, json, srv, true},
		{"server missing a field", "GET", "/servers/mcp_srv_0194f3a2b1c47d8e9f00112233445566", 200, json, strings.Replace(srv, `"name":"Linear",`, "", 1), false},
		{"server with an undocumented field", "GET", "/servers/mcp_srv_0194f3a2b1c47d8e9f00112233445566", 200, json, strings.Replace(srv, `"name"`, `"secret":"x","name"`, 1), false},
		{"timestamp without milliseconds", "GET", "/servers/mcp_srv_0194f3a2b1c47d8e9f00112233445566", 200, json, strings.Replace(srv, "12:00:00.000Z", "12:00:00Z", 1), false},
		{"undocumented status", "GET", "/servers/mcp_srv_0194f3a2b1c47d8e9f00112233445566", 418, json, errBody, false},
		{"documented error", "GET", "/servers/mcp_srv_0194f3a2b1c47d8e9f00112233445566", 404, json, errBody, true},
		{"error with a wrong type", "GET", "/servers/x", 404, json, strings.Replace(errBody, "not_found_error", "oops", 1), false},
		{"write with its sequence", "POST", "/servers", 201, withHeader("X-Vault-Sequence", "42"), srv, true},
		{"write with a malformed sequence", "POST", "/servers", 201, withHeader("X-Vault-Sequence", "forty-two"), srv, false},
		{"unknown route answered 404 with an Error", "GET", "/nope", 404, json, errBody, true},
		{"unknown route answered 200", "GET", "/nope", 200, json, `{}`, false},
		{"unknown method answered 404 with text", "PUT", "/servers", 404, http.Header{"Content-Type": {"text/plain"}}, "404 page not found", false},
		{"public readiness with a number", "GET", "!/readyz", 200, json, `{"status":"ready","stream":{"ok":true,"stream_seq":12}}`, false},
		{"public readiness", "GET", "!/readyz", 503, json, `{"status":"not_ready","stream":{"ok":false,"reason":"not connected to NATS"}}`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := base + c.path
			if strings.HasPrefix(c.path, "!") {
				url = "http://127.0.0.1:1" + c.path[1:]
			}
			req, err := http.NewRequest(c.method, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = ContractError(req, c.status, c.header, []byte(c.body))
			if c.ok && err != nil {
				t.Fatalf("want accepted, got %v", err)
			}
			if !c.ok && err == nil {
				t.Fatal("want refused, got accepted")
			}
			t.Logf("%v", err)
		})
	}
}

// TestContractRequests: the document accepts the requests the API accepts
// (checked on every 2xx through Do) and is not a blank cheque.
func TestContractRequests(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{`{"name":"Linear","server_label":"linear","server_url":"https://mcp.linear.app/mcp"}`, true},
		{`{"name":"Linear","server_label":"linear","server_url":"https://mcp.linear.app/mcp","metadata":{"team":"a"}}`, true},
		{`{"name":"Linear","server_label":"linear"}`, false},
		{`{"name":"Linear","server_label":"linear","server_url":"https://x/","extra":1}`, false},
		{`{"name":"Linear","server_label":"a b","server_url":"https://x/"}`, false},
	} {
		req, err := http.NewRequest("POST", "http://127.0.0.1:1/api/v1/llm/mcp/servers", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+KeyA)
		err = RequestError(req, []byte(c.body))
		if c.ok != (err == nil) {
			t.Fatalf("%s: want ok=%v, got %v", c.body, c.ok, err)
		}
	}
}
