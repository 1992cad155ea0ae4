package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

var (
	fzNow   = events.NewTime(time.Date(2026, 4, 29, 12, 0, 0, 0, time.UTC))
	fzOwner = events.Owner{Account: "acct", User: "u"}
	fzSrvID = "mcp_srv_0194f3a2b1c47d8e9f00112233445566"
	fzCrdID = "mcp_cred_0194f3a2b1c47d8e9f00112233445566"
)

// fzRefold checks the "one fold, used twice" property on a decision: the
// records survive the wire and folding them gives the state returned.
func fzRefold[S any](t *testing.T, recs []events.Record, apply func(S, events.Record) S, want S) {
	t.Helper()
	var got S
	for _, r := range recs {
		raw, err := events.Marshal(r.Meta, r.Event)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := events.Unmarshal(raw)
		if err != nil {
			t.Fatalf("an event the domain recorded does not decode: %v\n%s", err, raw)
		}
		got = apply(got, back)
	}
	if len(recs) > 0 && !reflect.DeepEqual(got, want) {
		t.Fatalf("refolded state differs:\n got %+v\nwant %+v", got, want)
	}
}

// FuzzServerBody decodes createServer and updateServer bodies and runs the
// domain rules on them: nothing panics, an accepted server keeps API.md's
// bounds, and its events refold to the same state.
func FuzzServerBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"Linear","server_label":"linear","server_url":"https://mcp.linear.app/mcp"}`,
		`{"name":"a","server_label":"a.b-c_d","server_url":"http://x:1/","server_description":null,"allowed_tools":["a","b"],"require_approval":"never","metadata":{"k":"v"}}`,
		`{"allowed_tools":null}`, `{"name":null}`, `{}`, `[]`, `{"name":"x"} {}`, `{"metadata":{"":"x"}}`,
		`{"name":"\u00e9","server_url":"https://[::1]:8080/p?q#f"}`, `{"allowed_tools":["a","a"]}`,
	} {
		f.Add([]byte(s))
	}
	base := domain.Server{ID: fzSrvID, Owner: fzOwner, CreatedAt: fzNow, UpdatedAt: fzNow}
	base.Name, base.ServerLabel, base.ServerURL, base.RequireApproval = "n", "l", "https://example.com/mcp", "always"
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parseServerPatch(body)
		if err != nil {
			if domain.KindOf(err) != domain.KindInvalid {
				t.Fatalf("a body error that is not a 400: %v", err)
			}
			return
		}
		if s, recs, err := domain.CreateServer(fzOwner, fzSrvID, p, fzNow); err == nil {
			fzServerBounds(t, s)
			fzRefold(t, recs, domain.ApplyServer, s)
			if _, err := json.Marshal(renderServer(s)); err != nil {
				t.Fatal(err)
			}
		}
		if s, recs, err := domain.UpdateServer(base, p, fzNow); err == nil {
			fzServerBounds(t, s)
			if len(recs) > 0 {
				_, crecs, err := domain.CreateServer(fzOwner, fzSrvID, domain.ServerPatch{Name: domain.Value(base.Name),
					ServerLabel: domain.Value(base.ServerLabel), ServerURL: domain.Value(base.ServerURL)}, fzNow)
				if err != nil {
					t.Fatal(err)
				}
				fzRefold(t, append(crecs, recs...), domain.ApplyServer, s)
			}
		}
	})
}

func fzServerBounds(t *testing.T, s domain.Server) {
	t.Helper()
	n := utf8.RuneCountInString
	if n(s.Name) < 1 || n(s.Name) > 255 || n(s.ServerLabel) < 1 || n(s.ServerLabel) > 255 || len(s.ServerURL) > 2048 ||
		len(s.AllowedTools) > 1000 || len(s.Metadata) > 16 || (s.RequireApproval != "always" && s.RequireApproval != "never") {
		t.Fatalf("accepted a server out of bounds: %+v", s)
	}
	if s.ServerDescription != nil && n(*s.ServerDescription) > 10000 {
		t.Fatal("description over 10000 characters accepted")
	}
	if !strings.HasPrefix(strings.ToLower(s.ServerURL), "http://") && !strings.HasPrefix(strings.ToLower(s.ServerURL), "https://") {
		t.Fatalf("non-http URL accepted: %q", s.ServerURL)
	}
}

// FuzzCredentialBody decodes createCredential bodies and runs the domain
// rules: nothing panics, no secret reaches the rendered credential, and the
// events refold to the same state.
func FuzzCredentialBody(f *testing.F) {
	for _, s := range []string{
		`{"bearer_token":"tok-0123456789abcdef"}`, `{"auth_type":"authorization","authorization":"Basic YWxhZGRpbjpvcGVuc2VzYW1l"}`,
		`{"headers":{"X-Api-Key":"k","X-Other":"v"}}`, `{"auth_type":"none","name":null}`, `{"name":"n","expires_at":"2999-01-01T00:00:00Z"}`,
		`{"headers":{"Content-Type":"x"}}`, `{"bearer_token":"a\r\nb"}`, `{"expires_at":"2000-01-01t00:00:00z"}`, `{"headers":{}}`,
	} {
		f.Add([]byte(s))
	}
	srv := domain.Server{ID: fzSrvID, Owner: fzOwner, CreatedAt: fzNow, UpdatedAt: fzNow}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := parseCredentialInput(body)
		if err != nil {
			if domain.KindOf(err) != domain.KindInvalid {
				t.Fatalf("a body error that is not a 400: %v", err)
			}
			return
		}
		n, err := domain.CreateCredential(srv, fzCrdID, in, fzNow)
		if err != nil {
			return
		}
		secret := n.Secret
		c, recs := n.Seal(&events.Sealed{})
		fzRefold(t, recs, domain.ApplyCredential, c)
		out, err := json.Marshal(renderCredential(c))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range append([]string{secret.BearerToken, secret.Authorization}, mapValues(secret.Headers)...) {
			if len(v) >= 8 && strings.Contains(string(out), v) {
				t.Fatalf("the secret %q is in the answer %s", v, out)
			}
		}
	})
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// FuzzTestBody decodes testServer bodies.
func FuzzTestBody(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"credential_id":null}`, `{"credential_id":"` + fzCrdID + `"}`, `{"credential_id":5}`, `{"x":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		obj, perr := parseObject(body, true, "credential_id")
		if perr != nil {
			return
		}
		if _, ok := obj["credential_id"]; !ok && len(obj) != 0 {
			t.Fatalf("unknown field accepted: %v", obj)
		}
		field[string](obj, "credential_id", "a credential ID string")
	})
}

// FuzzListParams parses list query strings (limit, order and the after and
// before cursors): an accepted query is within the bounds.
func FuzzListParams(f *testing.F) {
	for _, s := range []string{"", "limit=1", "limit=100&order=asc", "after=" + fzSrvID, "before=" + fzSrvID + "&after=" + fzSrvID,
		"limit=0", "limit=+5", "limit=1e2", "order=ASC", "after=mcp_srv_", "limit=5&limit=500", "after=%00", "limit=0x10"} {
		f.Add(s)
	}
	gin.SetMode(gin.ReleaseMode)
	f.Fuzz(func(t *testing.T, query string) {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		req, err := http.NewRequest("GET", "/x", nil)
		if err != nil {
			t.Skip()
		}
		req.URL.RawQuery = query
		c.Request = req
		p, err := listParams(c, domain.ValidServerID)
		if err != nil {
			if domain.KindOf(err) != domain.KindInvalid {
				t.Fatalf("not a 400: %v", err)
			}
			return
		}
		if p.Limit < 1 || p.Limit > 100 || (p.After != "" && p.Before != "") ||
			(p.After != "" && !domain.ValidServerID(p.After)) || (p.Before != "" && !domain.ValidServerID(p.Before)) {
			t.Fatalf("accepted out of bounds: %q → %+v", query, p)
		}
	})
}

// FuzzHeaderValues checks the header values the API validates itself
// (X-On-Behalf-Of and Idempotency-Key): an accepted value is 1 to 255
// printable characters of valid UTF-8.
func FuzzHeaderValues(f *testing.F) {
	for _, s := range []string{"u", "user@example.com", strings.Repeat("é", 255), strings.Repeat("é", 256), "a\tb", "a\x00", "\xff", " ", "\u200b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !validUser(v) {
			return
		}
		if v == "" || !utf8.ValidString(v) || utf8.RuneCountInString(v) > 255 || strings.ContainsAny(v, "\x00\r\n\t\x7f") {
			t.Fatalf("accepted %q", v)
		}
	})
}
