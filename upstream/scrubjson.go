package upstream

import (
	"bytes"
	"encoding/json"
	"strings"
)

// ScrubJSON replaces every secret of the session's credential in b, one
// JSON value (a JSON-RPC message relayed as bytes), returning b itself and
// false when none occurs. The result is always one valid JSON value when b
// was.
//
// A byte search alone is exact only for strings without escapes: an
// upstream could write a secret as "\u0073\u0065…" or with "\/". So when b
// holds a backslash, each string with an escape is also compared unescaped,
// and if a secret is there the message is decoded, scrubbed string by
// string (object keys and numbers included) and encoded again.
func (s *Session) ScrubJSON(b []byte) ([]byte, bool) {
	if len(s.secrets) == 0 {
		return b, false
	}
	return scrubJSON(b, s.secrets)
}

func scrubJSON(b []byte, secrets []string) ([]byte, bool) {
	plain := false
	for _, sec := range secrets {
		if bytes.Contains(b, []byte(sec)) {
			plain = true
			break
		}
	}
	if plain {
		out := []byte(scrub(string(b), secrets))
		// A secret with a quote or a backslash in it could have been cut
		// out of an escape sequence; only a still-valid value with no
		// escaped secret left is kept.
		if json.Valid(out) && !escapedSecret(out, secrets) {
			return out, true
		}
		return rewriteJSON(b, secrets), true
	}
	if escapedSecret(b, secrets) {
		return rewriteJSON(b, secrets), true
	}
	return b, false
}

// escapedSecret reports whether a JSON string of b that has an escape
// sequence holds a secret once unescaped. b is scanned once; only strings
// with a backslash are unescaped.
func escapedSecret(b []byte, secrets []string) bool {
	if bytes.IndexByte(b, '\\') < 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '"' {
			continue
		}
		start, escaped := i, false
		for i++; i < len(b) && b[i] != '"'; i++ {
			if b[i] == '\\' {
				escaped = true
				i++
			}
		}
		if !escaped || i >= len(b) {
			continue
		}
		var str string
		if json.Unmarshal(b[start:i+1], &str) != nil {
			return true // not a string the encoder would read: be safe
		}
		for _, sec := range secrets {
			if strings.Contains(str, sec) {
				return true
			}
		}
	}
	return false
}

// rewriteJSON decodes b, replaces every secret in its strings, keys and
// numbers, and encodes it again. A value that cannot be decoded becomes
// null: nothing of it is relayed.
func rewriteJSON(b []byte, secrets []string) []byte {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return []byte("null")
	}
	out, err := json.Marshal(scrubValue(v, secrets))
	if err != nil {
		return []byte("null")
	}
	return out
}

func scrubValue(v any, secrets []string) any {
	switch x := v.(type) {
	case string:
		return scrub(x, secrets)
	case json.Number:
		if s := scrub(string(x), secrets); s != string(x) {
			return s
		}
		return x
	case []any:
		for i := range x {
			x[i] = scrubValue(x[i], secrets)
		}
		return x
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[scrub(k, secrets)] = scrubValue(e, secrets)
		}
		return out
	}
	return v
}
