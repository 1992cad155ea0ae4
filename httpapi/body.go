package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/mcpvault/vault/domain"
)

// MaxBodyBytes is the largest request body accepted.
const MaxBodyBytes = 1 << 20

// readBody reads a POST body under the size limit and checks its media type.
// It answers 413/415/400 itself and returns ok=false when it did.
func readBody(c *gin.Context) ([]byte, bool) {
	if b, ok := c.Get(bodyKey); ok { // already read by the idempotency layer
		return b.([]byte), true
	}
	r := c.Request
	if r.ContentLength > MaxBodyBytes {
		abort(c, http.StatusRequestEntityTooLarge, typeInvalid, "The request body is larger than 1 MiB.", "", "")
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		abort(c, http.StatusRequestEntityTooLarge, typeInvalid, "The request body is larger than 1 MiB.", "", "")
		return nil, false
	}
	if err != nil {
		badRequest(c, "", "The request body could not be read.")
		return nil, false
	}
	if len(body) > 0 || r.Header.Get("Content-Type") != "" {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			if len(body) > 0 || err == nil {
				abort(c, http.StatusUnsupportedMediaType, typeInvalid,
					"Unsupported Content-Type; send application/json.", "", "")
				return nil, false
			}
		}
	}
	return body, true
}

// object is a parsed JSON object body whose fields are taken one by one.
type object map[string]json.RawMessage

// parseObject parses exactly one JSON object and refuses unknown fields. An
// empty body is an empty object when allowEmpty is set.
func parseObject(body []byte, allowEmpty bool, known ...string) (object, *domain.Error) {
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return object{}, nil
		}
		return nil, domain.Invalid("", "The request body must be a JSON object.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj object
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, domain.Invalid("", "The request body must be one valid JSON object.")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, domain.Invalid("", "The request body must hold exactly one JSON object; found trailing data.")
	}
	var unknown []string
	for k := range obj {
		if !contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, domain.Invalid(unknown[0], "Unrecognized request argument supplied: "+unknown[0]+".")
	}
	return obj, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// field decodes obj[name] into a domain field, answering a wrong type with
// an error naming the field.
func field[T any](obj object, name, want string) (domain.Field[T], *domain.Error) {
	raw, ok := obj[name]
	if !ok {
		return domain.Field[T]{}, nil
	}
	if isNull(raw) {
		return domain.Null[T](), nil
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return domain.Field[T]{}, domain.Invalid(name, "Invalid type for '"+name+"': expected "+want+".")
	}
	return domain.Value(v), nil
}

// timeField decodes an RFC 3339 timestamp field.
func timeField(obj object, name string) (domain.Field[time.Time], *domain.Error) {
	f, err := field[string](obj, name, "an RFC 3339 timestamp string")
	if err != nil || !f.Set || f.Null {
		return domain.Field[time.Time]{Set: f.Set, Null: f.Null}, err
	}
	// RFC 3339 (section 5.6) allows a lower-case "t" and "z"; Go's layout does not.
	t, perr := time.Parse(time.RFC3339Nano, strings.ToUpper(strings.TrimSpace(f.V)))
	if perr != nil {
		return domain.Field[time.Time]{}, domain.Invalid(name, "Invalid '"+name+"': expected an RFC 3339 timestamp such as 2026-04-29T12:00:00.000Z.")
	}
	return domain.Value(t), nil
}

// firstErr returns the first non-nil error.
func firstErr(errs ...*domain.Error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

var serverFields = []string{"name", "server_label", "server_url", "server_description", "allowed_tools", "require_approval", "metadata"}

func parseServerPatch(body []byte) (domain.ServerPatch, error) {
	obj, perr := parseObject(body, false, serverFields...)
	if perr != nil {
		return domain.ServerPatch{}, perr
	}
	var p domain.ServerPatch
	var e [7]*domain.Error
	p.Name, e[0] = field[string](obj, "name", "a string")
	p.ServerLabel, e[1] = field[string](obj, "server_label", "a string")
	p.ServerURL, e[2] = field[string](obj, "server_url", "a string")
	p.ServerDescription, e[3] = field[string](obj, "server_description", "a string or null")
	p.AllowedTools, e[4] = field[[]string](obj, "allowed_tools", "an array of strings or null")
	p.RequireApproval, e[5] = field[string](obj, "require_approval", "'always' or 'never'")
	p.Metadata, e[6] = field[map[string]string](obj, "metadata", "an object of string values")
	return p, firstErr(e[:]...)
}

var credentialFields = []string{"name", "auth_type", "bearer_token", "authorization", "headers", "expires_at"}

func parseCredentialInput(body []byte) (domain.CredentialInput, error) {
	obj, perr := parseObject(body, false, credentialFields...)
	if perr != nil {
		return domain.CredentialInput{}, perr
	}
	var in domain.CredentialInput
	var e [6]*domain.Error
	in.Name, e[0] = field[string](obj, "name", "a string or null")
	in.AuthType, e[1] = field[string](obj, "auth_type", "one of 'bearer', 'authorization', 'headers', 'none'")
	in.BearerToken, e[2] = field[string](obj, "bearer_token", "a string")
	in.Authorization, e[3] = field[string](obj, "authorization", "a string")
	in.Headers, e[4] = field[map[string]string](obj, "headers", "an object of string values")
	in.ExpiresAt, e[5] = timeField(obj, "expires_at")
	return in, firstErr(e[:]...)
}
