package domain

import (
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mcpvault/vault/events"
)

// Auth types of a credential.
const (
	AuthBearer        = "bearer"
	AuthAuthorization = "authorization"
	AuthHeaders       = "headers"
	AuthNone          = "none"
)

// Limits of credential fields.
const (
	MaxSecretLen     = 8192
	MaxHeaders       = 32
	MaxHeaderNameLen = 256
)

// Credential is the folded state of one credential.
type Credential struct {
	ID                   string
	ServerID             string
	Owner                events.Owner
	Name                 *string
	AuthType             string
	AuthorizationPreview *string
	HeaderNames          []string
	ExpiresAt            *events.Time
	LastUsedAt           *events.Time
	CreatedAt            events.Time
	UpdatedAt            events.Time
	RevokedAt            *events.Time
	Deleted              bool
	Secret               *events.Sealed
	// Version is the stream sequence of the credential's last state change
	// (its subject's last message; uses are not state changes): the
	// expectation of its next write.
	Version uint64
}

// Secret is a credential's plaintext secret. It exists only inside the API
// process, between the request and the sealing, and for an upstream call.
type Secret struct {
	BearerToken   string            `json:"bearer_token,omitempty"`
	Authorization string            `json:"authorization,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
}

// CredentialInput is the request to create a credential.
type CredentialInput struct {
	Name          Field[string]
	AuthType      Field[string]
	BearerToken   Field[string]
	Authorization Field[string]
	Headers       Field[map[string]string]
	ExpiresAt     Field[time.Time]
}

// NewCredential is a decided credential creation whose secret is not
// sealed yet: the caller seals Secret (bound to Record's ids and owner) and
// calls Seal, so that the plaintext never reaches an event.
type NewCredential struct {
	Record events.Record
	Secret Secret
	// NeedsSeal is false for auth type none (there is no secret).
	NeedsSeal bool
}

// Seal puts the sealed secret into the event and returns the credential's
// state and the event to append.
func (n NewCredential) Seal(sealed *events.Sealed) (Credential, []events.Record) {
	ev := n.Record.Event.(events.CredentialCreated)
	ev.Secret = sealed
	rec := n.Record
	rec.Event = ev
	return ApplyCredential(Credential{}, rec), []events.Record{rec}
}

// Usable reports whether the credential may be sent upstream at now.
func (c Credential) Usable(now time.Time) bool {
	return c.ID != "" && !c.Deleted && c.RevokedAt == nil && (c.ExpiresAt == nil || c.ExpiresAt.After(now))
}

// ApplyCredential is the fold of the credential aggregate: the state after r.
func ApplyCredential(c Credential, r events.Record) Credential {
	switch e := r.Event.(type) {
	case events.CredentialCreated:
		c = Credential{ID: r.AggregateID, ServerID: r.ServerID, Owner: r.Owner, Name: e.Name,
			AuthType: e.AuthType, AuthorizationPreview: e.AuthorizationPreview,
			HeaderNames: slices.Clone(e.HeaderNames), ExpiresAt: e.ExpiresAt,
			CreatedAt: r.OccurredAt, UpdatedAt: r.OccurredAt, Secret: e.Secret}
		if c.HeaderNames == nil {
			c.HeaderNames = []string{}
		}
	case events.CredentialRevoked:
		if c.RevokedAt == nil {
			t := r.OccurredAt
			c.RevokedAt = &t
			c.UpdatedAt = t
		}
	case events.CredentialDeleted:
		c.Deleted = true
	case events.CredentialUsed:
		t := r.OccurredAt
		c.LastUsedAt = &t
		return c // a use is not a state change: the version stays
	case events.ServerDeleted:
		c.Deleted = true
		return c // the server's event, not the credential's
	}
	if r.Sequence > 0 {
		c.Version = r.Sequence
	}
	return c
}

// CreateCredential decides a new credential with the given id on server s.
// The secret comes back in clear beside the event: the caller seals it and
// calls Seal.
func CreateCredential(s Server, id string, in CredentialInput, now events.Time) (NewCredential, error) {
	if s.ID == "" || s.Deleted {
		return NewCredential{}, ErrServerNotFound
	}
	var name *string
	if in.Name.has() {
		if err := checkString("name", in.Name, 1, MaxNameLen); err != nil {
			return NewCredential{}, err
		}
		n := in.Name.V
		name = &n
	}
	authType, err := inferAuthType(in)
	if err != nil {
		return NewCredential{}, err
	}
	var secret Secret
	var preview *string
	headerNames := []string{}
	switch authType {
	case AuthBearer:
		if err := checkSecretValue("bearer_token", in.BearerToken); err != nil {
			return NewCredential{}, err
		}
		secret.BearerToken = in.BearerToken.V
		preview = previewOf(in.BearerToken.V)
	case AuthAuthorization:
		if err := checkSecretValue("authorization", in.Authorization); err != nil {
			return NewCredential{}, err
		}
		secret.Authorization = in.Authorization.V
		preview = previewOf(in.Authorization.V)
	case AuthHeaders:
		if headerNames, err = checkHeaders(in.Headers); err != nil {
			return NewCredential{}, err
		}
		secret.Headers = in.Headers.V
	}
	var expires *events.Time
	if in.ExpiresAt.has() {
		t := events.NewTime(in.ExpiresAt.V)
		if !t.After(now.Time) {
			return NewCredential{}, Invalid("expires_at", "expires_at must be in the future.")
		}
		expires = &t
	}
	meta := events.Meta{AggregateID: id, ServerID: s.ID, Owner: s.Owner, OccurredAt: now}
	ev := events.CredentialCreated{Name: name, AuthType: authType, AuthorizationPreview: preview,
		HeaderNames: headerNames, ExpiresAt: expires}
	return NewCredential{Record: events.Record{Meta: meta, Event: ev}, Secret: secret, NeedsSeal: authType != AuthNone}, nil
}

// RevokeCredential decides a revoke. Revoking a revoked credential records
// nothing and returns it as it is.
func RevokeCredential(c Credential, now events.Time) (Credential, []events.Record, error) {
	if c.ID == "" || c.Deleted {
		return Credential{}, nil, ErrCredentialNotFound
	}
	if c.RevokedAt != nil {
		return c, nil, nil
	}
	rec := events.Record{Meta: credMeta(c, now), Event: events.CredentialRevoked{}}
	return ApplyCredential(c, rec), []events.Record{rec}, nil
}

// DeleteCredential decides a deletion.
func DeleteCredential(c Credential, now events.Time) (Credential, []events.Record, error) {
	if c.ID == "" || c.Deleted {
		return Credential{}, nil, ErrCredentialNotFound
	}
	rec := events.Record{Meta: credMeta(c, now), Event: events.CredentialDeleted{}}
	return ApplyCredential(c, rec), []events.Record{rec}, nil
}

// RecordUse decides the record of one use of a credential.
func RecordUse(c Credential, use events.CredentialUsed, now events.Time) (Credential, []events.Record, error) {
	if c.ID == "" || c.Deleted {
		return Credential{}, nil, ErrCredentialNotFound
	}
	rec := events.Record{Meta: credMeta(c, now), Event: use}
	return ApplyCredential(c, rec), []events.Record{rec}, nil
}

func credMeta(c Credential, now events.Time) events.Meta {
	return events.Meta{AggregateID: c.ID, ServerID: c.ServerID, Owner: c.Owner, OccurredAt: now}
}

func inferAuthType(in CredentialInput) (string, error) {
	given := map[string]bool{
		AuthBearer:        in.BearerToken.Set,
		AuthAuthorization: in.Authorization.Set,
		AuthHeaders:       in.Headers.Set,
	}
	params := map[string]string{AuthBearer: "bearer_token", AuthAuthorization: "authorization", AuthHeaders: "headers"}
	t := ""
	if in.AuthType.has() {
		t = in.AuthType.V
		switch t {
		case AuthBearer, AuthAuthorization, AuthHeaders, AuthNone:
		default:
			return "", Invalid("auth_type", "auth_type must be one of 'bearer', 'authorization', 'headers' or 'none'.")
		}
	} else if in.AuthType.Null {
		return "", Invalid("auth_type", "auth_type cannot be null.")
	} else {
		t = AuthNone
		n := 0
		for _, k := range []string{AuthBearer, AuthAuthorization, AuthHeaders} {
			if given[k] {
				t, n = k, n+1
			}
		}
		if n > 1 {
			return "", Invalid("auth_type", "Give only one of bearer_token, authorization and headers.")
		}
	}
	for _, k := range []string{AuthBearer, AuthAuthorization, AuthHeaders} {
		if given[k] && k != t {
			return "", Invalid(params[k], params[k]+" is not allowed with auth_type '"+t+"'.")
		}
		if !given[k] && k == t {
			return "", Invalid(params[k], "Missing required parameter: '"+params[k]+"' (required for auth_type '"+t+"').")
		}
	}
	return t, nil
}

// checkSecretValue enforces 1..8192 characters without control characters,
// so that a secret can never inject a header line upstream.
func checkSecretValue(param string, f Field[string]) error {
	if err := checkString(param, f, 1, MaxSecretLen); err != nil {
		return err
	}
	if !printable(f.V) {
		return Invalid(param, param+" must not contain control characters (CR, LF, NUL and others).")
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r == '\t' {
			continue
		}
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

var forbiddenHeaders = map[string]bool{
	"host": true, "content-length": true, "transfer-encoding": true, "connection": true,
	"upgrade": true, "te": true, "trailer": true, "keep-alive": true,
	// The MCP transport's own headers: a credential that set them would
	// replace the client's and break the protocol (API.md).
	"content-type": true, "accept": true, "mcp-session-id": true, "mcp-protocol-version": true,
	"last-event-id": true,
}

// checkHeaders enforces the custom header rules and returns the sorted names.
func checkHeaders(f Field[map[string]string]) ([]string, error) {
	if f.Null {
		return nil, Invalid("headers", "headers cannot be null.")
	}
	if len(f.V) < 1 || len(f.V) > MaxHeaders {
		return nil, Invalid("headers", "headers must hold 1 to 32 entries.")
	}
	seen := map[string]bool{}
	names := make([]string, 0, len(f.V))
	for name, value := range f.V {
		if !isToken(name) || len(name) > MaxHeaderNameLen {
			return nil, Invalid("headers", "Header names must be RFC 9110 tokens of at most 256 characters.")
		}
		lower := strings.ToLower(name)
		if forbiddenHeaders[lower] || strings.HasPrefix(lower, "proxy-") {
			return nil, Invalid("headers", "The header '"+name+"' cannot be stored: hop-by-hop, framing and MCP transport headers are refused.")
		}
		if seen[lower] {
			return nil, Invalid("headers", "Header names must be unique regardless of case.")
		}
		seen[lower] = true
		if utf8.RuneCountInString(value) < 1 || utf8.RuneCountInString(value) > MaxSecretLen || !utf8.ValidString(value) || !printable(value) {
			return nil, Invalid("headers", "Header values must be 1 to 8192 printable characters without CR, LF or NUL.")
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// previewOf returns "****...abcd" for secrets of 12 or more characters and
// "****" for shorter ones.
func previewOf(secret string) *string {
	r := []rune(secret)
	p := "****"
	if len(r) >= 12 {
		p = "****..." + string(r[len(r)-4:])
	}
	return &p
}
