package upstream

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A relayed message never carries a secret, whichever way the upstream
// encodes it in JSON; a message without one passes through unchanged.
func TestScrubJSONFindsEscapedSecrets(t *testing.T) {
	secret := "tok/Relay-0123456789"
	secrets := secretsOf(Auth{Type: AuthBearer, BearerToken: secret})
	esc := func(s string) string { // every character as \uXXXX
		var b strings.Builder
		for _, r := range s {
			fmt.Fprintf(&b, "\\u%04x", r)
		}
		return b.String()
	}
	cases := map[string]string{
		"plain":             `{"content":[{"type":"text","text":"got tok/Relay-0123456789"}]}`,
		"u-escaped":         `{"content":[{"type":"text","text":"got ` + esc(secret) + `"}]}`,
		"half-escaped":      `{"content":[{"type":"text","text":"got tok\u002fRelay-01234\u00356789"}]}`,
		"slash-escaped":     `{"content":[{"type":"text","text":"got tok\/Relay-0123456789"}]}`,
		"in a key":          `{"structuredContent":{"tok\/Relay-0123456789":1}}`,
		"plain and escaped": `{"a":"tok/Relay-0123456789","b":"tok\/Relay-0123456789\n"}`,
	}
	for name, in := range cases {
		out, found := scrubJSON([]byte(in), secrets)
		if !found {
			t.Fatalf("%s: secret not found in %s", name, in)
		}
		var v any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("%s: scrubbed %s is not JSON: %v", name, out, err)
		}
		decoded, _ := json.Marshal(v)
		if strings.Contains(string(decoded), secret) || strings.Contains(string(out), secret) || !strings.Contains(string(out), Redacted) {
			t.Fatalf("%s: scrubbed to %s", name, out)
		}
	}
	// Numbers that spell a secret, and a secret with a quote in it.
	num := secretsOf(Auth{Type: AuthBearer, BearerToken: "98765432"})
	if out, found := scrubJSON([]byte(`{"n":1987654321}`), num); !found || strings.Contains(string(out), "98765432") || !json.Valid(out) {
		t.Fatalf("a number holding the secret: %s %v", out, found)
	}
	quote := secretsOf(Auth{Type: AuthAuthorization, Authorization: `Key a"b\c-secret`})
	for _, in := range []string{`{"t":"Key a\"b\\c-secret"}`, `{"t":"a\u0022b\u005cc-secret"}`} {
		out, found := scrubJSON([]byte(in), quote)
		var s struct{ T string }
		if !found || json.Unmarshal(out, &s) != nil || strings.Contains(s.T, `a"b\c-secret`) {
			t.Fatalf("a secret with a quote and a backslash in %s: %s %v", in, out, found)
		}
	}
	// Nothing to find: the same bytes, escapes and all.
	for _, in := range []string{`{"text":"line\nnext \"quoted\" \u00e9"}`, `{"n":12,"s":"tok/Relay-012345678"}`} {
		out, found := scrubJSON([]byte(in), secrets)
		if found || string(out) != in {
			t.Fatalf("clean %s became %s (%v)", in, out, found)
		}
	}
}
