package domain_test

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

const (
	credID  = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d7f"
	credID2 = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d80"
)

// fixedSealed is what the fake sealer returns for every secret.
func fixedSealed() *events.Sealed {
	return &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte("nonce-012345"), Ciphertext: []byte("sealed-secret")}
}

// fakeSealer records what it was asked to seal and returns fixedSealed.
type fakeSealer struct {
	calls   int
	cred    domain.Credential
	secret  domain.Secret
	failure error
}

func (f *fakeSealer) seal(c domain.Credential, s domain.Secret) (*events.Sealed, error) {
	f.calls++
	f.cred, f.secret = c, s
	if f.failure != nil {
		return nil, f.failure
	}
	return fixedSealed(), nil
}

// createCredential decides a creation and seals it with seal, as the
// application layer does.
func createCredential(s domain.Server, id string, in domain.CredentialInput, now events.Time,
	seal func(domain.Credential, domain.Secret) (*events.Sealed, error)) (domain.Credential, []events.Record, error) {
	n, err := domain.CreateCredential(s, id, in, now)
	if err != nil {
		return domain.Credential{}, nil, err
	}
	var sealed *events.Sealed
	if n.NeedsSeal {
		unsealed, _ := n.Seal(nil)
		if sealed, err = seal(unsealed, n.Secret); err != nil {
			return domain.Credential{}, nil, err
		}
	}
	c, recs := n.Seal(sealed)
	return c, recs, nil
}

func credMeta(id string, at events.Time) events.Meta {
	return events.Meta{AggregateID: id, ServerID: srvID, Owner: owner, OccurredAt: at}
}

// bearerCreated is the record of a bearer credential created at t0.
func bearerCreated() events.Record {
	return events.Record{Meta: credMeta(credID, t0), Event: events.CredentialCreated{
		Name: ptr("Personal Linear token"), AuthType: "bearer", AuthorizationPreview: ptr("****...cdef"),
		HeaderNames: []string{}, Secret: fixedSealed(),
	}}
}

// foldCredential folds the records about credential id (its own events and
// its server's) into its state.
func foldCredential(id string, recs []events.Record) domain.Credential {
	var c domain.Credential
	for _, r := range recs {
		if r.AggregateID == id || r.AggregateID == r.ServerID {
			c = domain.ApplyCredential(c, r)
		}
	}
	return c
}

type credentialCase struct {
	name  string
	given []events.Record // server and credential events
	when  func(s domain.Server, c domain.Credential) (domain.Credential, []events.Record, error)
	want  []events.Record
	err   *wantErr
	check func(t *testing.T, c domain.Credential)
}

// runCredentialCases runs given/command/want cases on credential credID and
// checks that the fold of the history (directly and through JSON) is the
// state the command returned.
func runCredentialCases(t *testing.T, cases []credentialCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := foldServer(tc.given)
			c := foldCredential(credID, tc.given)
			got, recs, err := tc.when(s, c)
			checkErr(t, err, tc.err)
			if tc.err != nil {
				if len(recs) != 0 {
					t.Fatalf("a refused command recorded %d events", len(recs))
				}
				return
			}
			checkRecords(t, recs, tc.want)
			history := append(append([]events.Record{}, tc.given...), recs...)
			if replayed := foldCredential(credID, history); !reflect.DeepEqual(replayed, got) {
				t.Fatalf("fold of the history differs from the returned state:\n fold     %#v\n returned %#v", replayed, got)
			}
			if replayed := foldCredential(credID, viaWire(t, history)); !reflect.DeepEqual(replayed, got) {
				t.Fatalf("fold of the history read back from JSON differs from the returned state:\n fold     %#v\n returned %#v", replayed, got)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

func TestCreateCredential(t *testing.T) {
	server := []events.Record{serverCreated(t0)}
	create := func(in domain.CredentialInput) func(domain.Server, domain.Credential) (domain.Credential, []events.Record, error) {
		return func(s domain.Server, _ domain.Credential) (domain.Credential, []events.Record, error) {
			f := &fakeSealer{}
			return createCredential(s, credID, in, t1, f.seal)
		}
	}
	created := func(e events.CredentialCreated) []events.Record {
		if e.HeaderNames == nil {
			e.HeaderNames = []string{}
		}
		return []events.Record{{Meta: credMeta(credID, t1), Event: e}}
	}
	future := time.Date(2027, 1, 2, 3, 4, 5, 678_999_999, time.FixedZone("CEST", 2*3600))

	runCredentialCases(t, []credentialCase{
		{
			name:  "the seed: name and bearer_token",
			given: server,
			when: create(domain.CredentialInput{Name: domain.Value("Personal Linear token"),
				BearerToken: domain.Value("lin_api_0123456789abcdef")}),
			want: created(events.CredentialCreated{Name: ptr("Personal Linear token"), AuthType: "bearer",
				AuthorizationPreview: ptr("****...cdef"), Secret: fixedSealed()}),
			check: func(t *testing.T, c domain.Credential) {
				if c.ID != credID || c.ServerID != srvID || c.Owner != owner || c.CreatedAt != t1 || c.UpdatedAt != t1 {
					t.Fatalf("state = %+v", c)
				}
				if c.RevokedAt != nil || c.LastUsedAt != nil || c.ExpiresAt != nil || c.Deleted || c.HeaderNames == nil {
					t.Fatalf("state = %+v", c)
				}
			},
		},
		{
			name:  "authorization inferred",
			given: server,
			when:  create(domain.CredentialInput{Authorization: domain.Value("Basic dXNlcjpwYXNzd29yZA==")}),
			want: created(events.CredentialCreated{AuthType: "authorization",
				AuthorizationPreview: ptr("****...ZA=="), Secret: fixedSealed()}),
		},
		{
			name:  "headers inferred, names sorted, no preview",
			given: server,
			when: create(domain.CredentialInput{Headers: domain.Value(map[string]string{
				"X-Tenant": "acme", "X-Api-Key": "k-123", "api_token": "t\tab"})}),
			want: created(events.CredentialCreated{AuthType: "headers",
				HeaderNames: []string{"X-Api-Key", "X-Tenant", "api_token"}, Secret: fixedSealed()}),
		},
		{
			name:  "none inferred: nothing sealed",
			given: server,
			when:  create(domain.CredentialInput{Name: domain.Value("public")}),
			want:  created(events.CredentialCreated{Name: ptr("public"), AuthType: "none"}),
			check: func(t *testing.T, c domain.Credential) {
				if c.Secret != nil || c.AuthorizationPreview != nil {
					t.Fatalf("none credential has secret %v preview %v", c.Secret, c.AuthorizationPreview)
				}
			},
		},
		{
			name:  "auth_type none given explicitly",
			given: server,
			when:  create(domain.CredentialInput{AuthType: domain.Value("none")}),
			want:  created(events.CredentialCreated{AuthType: "none"}),
		},
		{
			name:  "auth_type given and matching",
			given: server,
			when:  create(domain.CredentialInput{AuthType: domain.Value("bearer"), BearerToken: domain.Value("short")}),
			want:  created(events.CredentialCreated{AuthType: "bearer", AuthorizationPreview: ptr("****"), Secret: fixedSealed()}),
		},
		{
			name:  "name null",
			given: server,
			when:  create(domain.CredentialInput{Name: domain.Null[string](), BearerToken: domain.Value("abcdefghijkl")}),
			want:  created(events.CredentialCreated{AuthType: "bearer", AuthorizationPreview: ptr("****...ijkl"), Secret: fixedSealed()}),
		},
		{
			name:  "expires_at in the future, stored in UTC milliseconds",
			given: server,
			when:  create(domain.CredentialInput{BearerToken: domain.Value("tok"), ExpiresAt: domain.Value(future)}),
			want: created(events.CredentialCreated{AuthType: "bearer", AuthorizationPreview: ptr("****"), Secret: fixedSealed(),
				ExpiresAt: ptr(events.NewTime(time.Date(2027, 1, 2, 1, 4, 5, 678_000_000, time.UTC)))}),
			check: func(t *testing.T, c domain.Credential) {
				if got := c.ExpiresAt.String(); got != "2027-01-02T01:04:05.678Z" {
					t.Fatalf("expires_at = %s", got)
				}
			},
		},
		{
			name:  "expires_at null",
			given: server,
			when:  create(domain.CredentialInput{ExpiresAt: domain.Null[time.Time]()}),
			want:  created(events.CredentialCreated{AuthType: "none"}),
		},
		{
			name:  "expires_at in the past",
			given: server,
			when:  create(domain.CredentialInput{BearerToken: domain.Value("tok"), ExpiresAt: domain.Value(t0.Time)}),
			err:   invalid("expires_at"),
		},
		{
			name:  "expires_at now",
			given: server,
			when:  create(domain.CredentialInput{BearerToken: domain.Value("tok"), ExpiresAt: domain.Value(t1.Time)}),
			err:   invalid("expires_at"),
		},
		{
			name:  "expires_at less than a millisecond after now",
			given: server,
			when:  create(domain.CredentialInput{ExpiresAt: domain.Value(t1.Add(time.Microsecond))}),
			err:   invalid("expires_at"),
		},
		{
			name: "unknown server",
			when: create(domain.CredentialInput{BearerToken: domain.Value("tok")}),
			err:  notFound,
		},
		{
			name:  "deleted server",
			given: []events.Record{serverCreated(t0), serverDeleted(t1)},
			when:  create(domain.CredentialInput{BearerToken: domain.Value("tok")}),
			err:   notFound,
		},
	})
}

// TestCreateCredentialSealing checks what the sealer is given: the
// credential's identity (bound to the ciphertext) and the plaintext secret,
// and that the secret appears nowhere in the event.
func TestCreateCredentialSealing(t *testing.T) {
	s := foldServer([]events.Record{serverCreated(t0)})
	for _, tc := range []struct {
		name string
		in   domain.CredentialInput
		want domain.Secret
	}{
		{"bearer", domain.CredentialInput{BearerToken: domain.Value("lin_api_SECRET_0123456789")},
			domain.Secret{BearerToken: "lin_api_SECRET_0123456789"}},
		{"authorization", domain.CredentialInput{Authorization: domain.Value("Token SECRET_0123456789")},
			domain.Secret{Authorization: "Token SECRET_0123456789"}},
		{"headers", domain.CredentialInput{Headers: domain.Value(map[string]string{"X-Api-Key": "SECRET_0123456789"})},
			domain.Secret{Headers: map[string]string{"X-Api-Key": "SECRET_0123456789"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSealer{}
			c, recs, err := createCredential(s, credID, tc.in, t1, f.seal)
			checkErr(t, err, nil)
			if f.calls != 1 {
				t.Fatalf("sealer called %d times, want 1", f.calls)
			}
			if f.cred.ID != credID || f.cred.ServerID != srvID || f.cred.Owner != owner {
				t.Fatalf("sealer bound to {%q %q %+v}, want {%q %q %+v}", f.cred.ID, f.cred.ServerID, f.cred.Owner, credID, srvID, owner)
			}
			if !reflect.DeepEqual(f.secret, tc.want) {
				t.Fatalf("sealer got secret %+v, want %+v", f.secret, tc.want)
			}
			if !reflect.DeepEqual(c.Secret, fixedSealed()) {
				t.Fatalf("state secret = %+v, want the sealer's output", c.Secret)
			}
			for _, r := range recs {
				b, err := events.Marshal(r.Meta, r.Event)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(b), "SECRET_0123456789") {
					t.Fatalf("event carries the plaintext secret: %s", b)
				}
			}
		})
	}
	t.Run("none is not sealed", func(t *testing.T) {
		f := &fakeSealer{}
		_, _, err := createCredential(s, credID, domain.CredentialInput{}, t1, f.seal)
		checkErr(t, err, nil)
		if f.calls != 0 {
			t.Fatalf("sealer called %d times for auth_type none", f.calls)
		}
	})
	t.Run("sealer failure records nothing", func(t *testing.T) {
		boom := errors.New("keyring unavailable")
		f := &fakeSealer{failure: boom}
		_, recs, err := createCredential(s, credID, domain.CredentialInput{BearerToken: domain.Value("tok")}, t1, f.seal)
		if !errors.Is(err, boom) {
			t.Fatalf("error = %v, want the sealer's error", err)
		}
		if len(recs) != 0 {
			t.Fatalf("recorded %d events", len(recs))
		}
	})
	t.Run("a refused input is not sealed", func(t *testing.T) {
		f := &fakeSealer{}
		_, _, err := createCredential(s, credID, domain.CredentialInput{BearerToken: domain.Value("a\nb")}, t1, f.seal)
		checkErr(t, err, invalid("bearer_token"))
		if f.calls != 0 {
			t.Fatalf("sealer called for a refused input")
		}
	})
}

// credentialRule is one createCredential rule case: an input and the param
// of the error it must get ("" when valid).
type credentialRule struct {
	name  string
	in    domain.CredentialInput
	param string
}

func credentialRules() []credentialRule {
	bearer := func(v string) domain.CredentialInput { return domain.CredentialInput{BearerToken: domain.Value(v)} }
	authz := func(v string) domain.CredentialInput { return domain.CredentialInput{Authorization: domain.Value(v)} }
	headers := func(h map[string]string) domain.CredentialInput {
		return domain.CredentialInput{Headers: domain.Value(h)}
	}
	hdr := func(name, value string) domain.CredentialInput { return headers(map[string]string{name: value}) }
	nHeaders := func(n int) map[string]string {
		h := map[string]string{}
		for i := range n {
			h["X-H"+strconv.Itoa(i)] = "v"
		}
		return h
	}
	typed := func(t string, in domain.CredentialInput) domain.CredentialInput {
		in.AuthType = domain.Value(t)
		return in
	}
	rules := []credentialRule{
		{"name 255 chars", domain.CredentialInput{Name: domain.Value(strings.Repeat("n", 255))}, ""},
		{"name empty", domain.CredentialInput{Name: domain.Value("")}, "name"},
		{"name 256 chars", domain.CredentialInput{Name: domain.Value(strings.Repeat("n", 256))}, "name"},

		{"auth_type unknown", domain.CredentialInput{AuthType: domain.Value("basic")}, "auth_type"},
		{"auth_type wrong case", domain.CredentialInput{AuthType: domain.Value("Bearer"), BearerToken: domain.Value("t")}, "auth_type"},
		{"auth_type null", domain.CredentialInput{AuthType: domain.Null[string]()}, "auth_type"},

		// Conflicts between auth_type and the given fields name the field at fault.
		{"bearer without bearer_token", typed("bearer", domain.CredentialInput{}), "bearer_token"},
		{"authorization without authorization", typed("authorization", domain.CredentialInput{}), "authorization"},
		{"headers without headers", typed("headers", domain.CredentialInput{}), "headers"},
		{"bearer with authorization", typed("bearer", domain.CredentialInput{BearerToken: domain.Value("t"), Authorization: domain.Value("x")}), "authorization"},
		{"bearer with both", typed("bearer", domain.CredentialInput{BearerToken: domain.Value("t"), Headers: domain.Value(map[string]string{"X-A": "v"})}), "headers"},
		{"authorization with bearer_token", typed("authorization", domain.CredentialInput{BearerToken: domain.Value("t"), Authorization: domain.Value("x")}), "bearer_token"},
		{"headers with bearer_token", typed("headers", domain.CredentialInput{BearerToken: domain.Value("t"), Headers: domain.Value(map[string]string{"X-A": "v"})}), "bearer_token"},
		{"none with bearer_token", typed("none", bearer("t")), "bearer_token"},
		{"none with authorization", typed("none", authz("t")), "authorization"},
		{"none with headers", typed("none", hdr("X-A", "v")), "headers"},
		{"bearer_token and authorization without auth_type", domain.CredentialInput{BearerToken: domain.Value("t"), Authorization: domain.Value("a")}, "auth_type"},
		{"bearer_token and headers without auth_type", domain.CredentialInput{BearerToken: domain.Value("t"), Headers: domain.Value(map[string]string{"X-A": "v"})}, "auth_type"},
		{"bearer_token null", domain.CredentialInput{BearerToken: domain.Null[string]()}, "bearer_token"},
		{"authorization null", domain.CredentialInput{Authorization: domain.Null[string]()}, "authorization"},
		{"headers null", domain.CredentialInput{Headers: domain.Null[map[string]string]()}, "headers"},
		{"bearer with bearer_token null", typed("bearer", domain.CredentialInput{BearerToken: domain.Null[string]()}), "bearer_token"},

		{"bearer_token 1 char", bearer("x"), ""},
		{"bearer_token 8192 chars", bearer(strings.Repeat("b", 8192)), ""},
		{"bearer_token empty", bearer(""), "bearer_token"},
		{"bearer_token 8193 chars", bearer(strings.Repeat("b", 8193)), "bearer_token"},
		{"authorization 8192 chars", authz(strings.Repeat("a", 8192)), ""},
		{"authorization empty", authz(""), "authorization"},
		{"authorization 8193 chars", authz(strings.Repeat("a", 8193)), "authorization"},
	}
	for _, cc := range []struct{ name, s string }{
		{"CRLF", "tok\r\nX-Injected: 1"}, {"LF", "tok\nx"}, {"CR", "tok\rx"}, {"NUL", "tok\x00x"},
		{"DEL", "tok\x7fx"}, {"ESC", "tok\x1bx"}, {"BEL", "\x07"},
	} {
		rules = append(rules,
			credentialRule{"bearer_token with " + cc.name, bearer(cc.s), "bearer_token"},
			credentialRule{"authorization with " + cc.name, authz(cc.s), "authorization"},
			credentialRule{"header value with " + cc.name, hdr("X-Api-Key", cc.s), "headers"},
		)
	}
	rules = append(rules, []credentialRule{
		{"headers 1 entry", hdr("X-A", "v"), ""},
		{"headers 32 entries", headers(nHeaders(32)), ""},
		{"headers empty", headers(map[string]string{}), "headers"},
		{"headers 33 entries", headers(nHeaders(33)), "headers"},
		{"header name with every token symbol", hdr("X!#$%&'*+-.^_`|~9", "v"), ""},
		{"header name 256 chars", hdr(strings.Repeat("h", 256), "v"), ""},
		{"header name 257 chars", hdr(strings.Repeat("h", 257), "v"), "headers"},
		{"header name empty", hdr("", "v"), "headers"},
		{"header name with a space", hdr("X Api", "v"), "headers"},
		{"header name with a colon", hdr("X-Api:", "v"), "headers"},
		{"header name with CRLF", hdr("X-A\r\nX-B", "v"), "headers"},
		{"header name with a slash", hdr("X/A", "v"), "headers"},
		{"header name non-ASCII", hdr("X-Ä", "v"), "headers"},
		{"header names equal ignoring case", headers(map[string]string{"X-Api-Key": "a", "x-api-key": "b"}), "headers"},
		{"header value 8192 chars", hdr("X-A", strings.Repeat("v", 8192)), ""},
		{"header value with a tab", hdr("X-A", "a\tb"), ""},
		{"header value empty", hdr("X-A", ""), "headers"},
		{"header value 8193 chars", hdr("X-A", strings.Repeat("v", 8193)), "headers"},
	}...)
	for _, name := range []string{"Host", "host", "Content-Length", "Transfer-Encoding", "Connection", "CONNECTION",
		"Upgrade", "TE", "te", "Trailer", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "proxy-anything",
		// The MCP transport's own headers (API.md): setting them breaks the protocol.
		"Content-Type", "content-type", "Accept", "Mcp-Session-Id", "MCP-SESSION-ID", "Mcp-Protocol-Version", "Last-Event-ID", "last-event-id"} {
		rules = append(rules, credentialRule{"header " + name + " refused", hdr(name, "v"), "headers"})
	}
	return rules
}

// TestCredentialRules checks every createCredential rule of API.md: a broken
// rule is refused with its param and records nothing.
func TestCredentialRules(t *testing.T) {
	s := foldServer([]events.Record{serverCreated(t0)})
	for _, r := range credentialRules() {
		t.Run(r.name, func(t *testing.T) {
			f := &fakeSealer{}
			c, recs, err := createCredential(s, credID, r.in, t1, f.seal)
			if r.param != "" {
				checkErr(t, err, invalid(r.param))
				if len(recs) != 0 {
					t.Fatalf("a refused create recorded %d events", len(recs))
				}
				return
			}
			checkErr(t, err, nil)
			if len(recs) != 1 {
				t.Fatalf("recorded %d events, want 1", len(recs))
			}
			if got := foldCredential(credID, recs); !reflect.DeepEqual(got, c) {
				t.Fatalf("fold %#v, command %#v", got, c)
			}
		})
	}
}

func TestCredentialPreview(t *testing.T) {
	s := foldServer([]events.Record{serverCreated(t0)})
	for _, tc := range []struct {
		secret string
		want   string
	}{
		{"a", "****"},
		{"abcdefghijk", "****"},         // 11 chars
		{"abcdefghijkl", "****...ijkl"}, // 12 chars
		{"lin_api_0123456789abcdef", "****...cdef"},
		{"ééééééééwxyz", "****...wxyz"}, // 12 characters, more bytes
		{"éééééééééé€€", "****...éé€€"}, // the last four characters, not bytes
		{"ééééééééééé", "****"},         // 11 characters, 22 bytes
	} {
		for _, kind := range []string{"bearer", "authorization"} {
			t.Run(kind+"/"+tc.secret, func(t *testing.T) {
				in := domain.CredentialInput{BearerToken: domain.Value(tc.secret)}
				if kind == "authorization" {
					in = domain.CredentialInput{Authorization: domain.Value(tc.secret)}
				}
				f := &fakeSealer{}
				c, _, err := createCredential(s, credID, in, t1, f.seal)
				checkErr(t, err, nil)
				if c.AuthorizationPreview == nil || *c.AuthorizationPreview != tc.want {
					t.Fatalf("preview = %v, want %q", c.AuthorizationPreview, tc.want)
				}
			})
		}
	}
}

func TestRevokeCredential(t *testing.T) {
	revoked := events.Record{Meta: credMeta(credID, t1), Event: events.CredentialRevoked{}}
	deleted := events.Record{Meta: credMeta(credID, t1), Event: events.CredentialDeleted{}}
	revoke := func(at events.Time) func(domain.Server, domain.Credential) (domain.Credential, []events.Record, error) {
		return func(_ domain.Server, c domain.Credential) (domain.Credential, []events.Record, error) {
			return domain.RevokeCredential(c, at)
		}
	}
	runCredentialCases(t, []credentialCase{
		{
			name:  "revoke",
			given: []events.Record{serverCreated(t0), bearerCreated()},
			when:  revoke(t1),
			want:  []events.Record{revoked},
			check: func(t *testing.T, c domain.Credential) {
				if c.RevokedAt == nil || *c.RevokedAt != t1 || c.UpdatedAt != t1 || c.CreatedAt != t0 {
					t.Fatalf("revoked_at %v updated_at %s created_at %s", c.RevokedAt, c.UpdatedAt, c.CreatedAt)
				}
				if c.Usable(t1.Time) {
					t.Fatal("a revoked credential is usable")
				}
			},
		},
		{
			name:  "revoke twice records nothing the second time",
			given: []events.Record{serverCreated(t0), bearerCreated(), revoked},
			when:  revoke(t2),
			want:  nil,
			check: func(t *testing.T, c domain.Credential) {
				if c.RevokedAt == nil || *c.RevokedAt != t1 || c.UpdatedAt != t1 {
					t.Fatalf("second revoke changed the state: revoked_at %v updated_at %s", c.RevokedAt, c.UpdatedAt)
				}
			},
		},
		{
			name:  "revoke a deleted credential",
			given: []events.Record{serverCreated(t0), bearerCreated(), deleted},
			when:  revoke(t2),
			err:   notFound,
		},
		{
			name:  "revoke a credential of a deleted server",
			given: []events.Record{serverCreated(t0), bearerCreated(), serverDeleted(t1, credID)},
			when:  revoke(t2),
			err:   notFound,
		},
		{
			name:  "revoke an unknown credential",
			given: []events.Record{serverCreated(t0)},
			when:  revoke(t1),
			err:   notFound,
		},
	})
}

func TestDeleteCredential(t *testing.T) {
	revoked := events.Record{Meta: credMeta(credID, t1), Event: events.CredentialRevoked{}}
	del := func(at events.Time) func(domain.Server, domain.Credential) (domain.Credential, []events.Record, error) {
		return func(_ domain.Server, c domain.Credential) (domain.Credential, []events.Record, error) {
			return domain.DeleteCredential(c, at)
		}
	}
	runCredentialCases(t, []credentialCase{
		{
			name:  "delete",
			given: []events.Record{serverCreated(t0), bearerCreated()},
			when:  del(t1),
			want:  []events.Record{{Meta: credMeta(credID, t1), Event: events.CredentialDeleted{}}},
			check: func(t *testing.T, c domain.Credential) {
				if !c.Deleted || c.Usable(t1.Time) {
					t.Fatalf("deleted %v usable %v", c.Deleted, c.Usable(t1.Time))
				}
			},
		},
		{
			name:  "delete a revoked credential",
			given: []events.Record{serverCreated(t0), bearerCreated(), revoked},
			when:  del(t2),
			want:  []events.Record{{Meta: credMeta(credID, t2), Event: events.CredentialDeleted{}}},
		},
		{
			name:  "delete twice",
			given: []events.Record{serverCreated(t0), bearerCreated(), {Meta: credMeta(credID, t1), Event: events.CredentialDeleted{}}},
			when:  del(t2),
			err:   notFound,
		},
		{
			name:  "delete a credential of a deleted server",
			given: []events.Record{serverCreated(t0), bearerCreated(), serverDeleted(t1, credID)},
			when:  del(t2),
			err:   notFound,
		},
		{
			name:  "delete an unknown credential",
			given: []events.Record{serverCreated(t0)},
			when:  del(t1),
			err:   notFound,
		},
	})
}

func TestRecordUse(t *testing.T) {
	use := events.CredentialUsed{Operation: "test_server", Outcome: "connected", ToolCount: 3, TargetHost: "mcp.linear.app"}
	failed := events.CredentialUsed{Operation: "test_server", Outcome: "failed", ErrorCode: "upstream_unauthorized", TargetHost: "mcp.linear.app"}
	record := func(u events.CredentialUsed, at events.Time) func(domain.Server, domain.Credential) (domain.Credential, []events.Record, error) {
		return func(_ domain.Server, c domain.Credential) (domain.Credential, []events.Record, error) {
			return domain.RecordUse(c, u, at)
		}
	}
	runCredentialCases(t, []credentialCase{
		{
			name:  "first use sets last_used_at",
			given: []events.Record{serverCreated(t0), bearerCreated()},
			when:  record(use, t1),
			want:  []events.Record{{Meta: credMeta(credID, t1), Event: use}},
			check: func(t *testing.T, c domain.Credential) {
				if c.LastUsedAt == nil || *c.LastUsedAt != t1 {
					t.Fatalf("last_used_at = %v, want %s", c.LastUsedAt, t1)
				}
			},
		},
		{
			name:  "a later use moves last_used_at",
			given: []events.Record{serverCreated(t0), bearerCreated(), {Meta: credMeta(credID, t1), Event: use}},
			when:  record(failed, t2),
			want:  []events.Record{{Meta: credMeta(credID, t2), Event: failed}},
			check: func(t *testing.T, c domain.Credential) {
				if c.LastUsedAt == nil || *c.LastUsedAt != t2 {
					t.Fatalf("last_used_at = %v, want %s", c.LastUsedAt, t2)
				}
			},
		},
		{
			name:  "use of a deleted credential",
			given: []events.Record{serverCreated(t0), bearerCreated(), {Meta: credMeta(credID, t1), Event: events.CredentialDeleted{}}},
			when:  record(use, t2),
			err:   notFound,
		},
		{
			name:  "use of an unknown credential",
			given: []events.Record{serverCreated(t0)},
			when:  record(use, t1),
			err:   notFound,
		},
	})
}

// TestApplyCredentialIgnoresOtherCredentials checks the fold of one
// credential is not disturbed by its siblings' events, only by its own and
// by its server's deletion.
func TestApplyCredentialIgnoresOtherCredentials(t *testing.T) {
	s := foldServer([]events.Record{serverCreated(t0)})
	f := &fakeSealer{}
	_, a, err := createCredential(s, credID, domain.CredentialInput{BearerToken: domain.Value("tok-a")}, t0, f.seal)
	checkErr(t, err, nil)
	_, b, err := createCredential(s, credID2, domain.CredentialInput{AuthType: domain.Value("none")}, t1, f.seal)
	checkErr(t, err, nil)
	bRevoked := events.Record{Meta: credMeta(credID2, t2), Event: events.CredentialRevoked{}}
	history := append(append(append([]events.Record{serverCreated(t0)}, a...), b...), bRevoked)
	c := foldCredential(credID, history)
	if c.ID != credID || c.AuthType != "bearer" || c.RevokedAt != nil {
		t.Fatalf("credential A after B's events: %+v", c)
	}
	c = foldCredential(credID, append(history, serverDeleted(t2, credID, credID2)))
	if !c.Deleted {
		t.Fatal("credential not deleted with its server")
	}
}

func TestCredentialUsable(t *testing.T) {
	s := foldServer([]events.Record{serverCreated(t0)})
	f := &fakeSealer{}
	exp := t2.Time
	c, _, err := createCredential(s, credID, domain.CredentialInput{BearerToken: domain.Value("tok"),
		ExpiresAt: domain.Value(exp)}, t0, f.seal)
	checkErr(t, err, nil)
	if !c.Usable(t1.Time) {
		t.Fatal("a fresh credential is not usable before it expires")
	}
	if c.Usable(t2.Time) || c.Usable(t2.Add(time.Second)) {
		t.Fatal("an expired credential is usable")
	}
	if (domain.Credential{}).Usable(t1.Time) {
		t.Fatal("the zero credential is usable")
	}
}
