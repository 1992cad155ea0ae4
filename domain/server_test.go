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

// The fixed clock and identities of every domain test.
var (
	t0    = events.NewTime(time.Date(2026, 4, 29, 12, 0, 0, 0, time.UTC))
	t1    = events.NewTime(time.Date(2026, 4, 29, 12, 5, 0, 0, time.UTC))
	t2    = events.NewTime(time.Date(2026, 4, 29, 12, 10, 0, 0, time.UTC))
	owner = events.Owner{Account: "acct_a", User: "user-42"}
	srvID = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d7e"
)

// wantErr is the expected domain error: its kind and the request field at fault.
type wantErr struct {
	kind  domain.Kind
	param string
}

var notFound = &wantErr{kind: domain.KindNotFound}

func invalid(param string) *wantErr { return &wantErr{kind: domain.KindInvalid, param: param} }

// checkErr fails unless err is the domain error want (or nil when want is nil).
func checkErr(tb testing.TB, err error, want *wantErr) {
	tb.Helper()
	if want == nil {
		if err != nil {
			tb.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var de *domain.Error
	if !errors.As(err, &de) {
		tb.Fatalf("error = %v (%T), want a *domain.Error of kind %d param %q", err, err, want.kind, want.param)
	}
	if de.Kind != want.kind || de.Param != want.param {
		tb.Fatalf("error = {kind %d, param %q, %q}, want {kind %d, param %q}", de.Kind, de.Param, de.Message, want.kind, want.param)
	}
	if de.Message == "" {
		tb.Fatalf("error of kind %d param %q has no message", de.Kind, de.Param)
	}
}

// checkRecords fails unless got holds exactly the events of want.
func checkRecords(tb testing.TB, got, want []events.Record) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("recorded %d events, want %d:\n got  %+v\n want %+v", len(got), len(want), got, want)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			tb.Fatalf("event %d:\n got  %#v\n want %#v", i, got[i], want[i])
		}
	}
}

// viaWire passes records through the envelope's JSON, as the projector sees them.
func viaWire(tb testing.TB, recs []events.Record) []events.Record {
	tb.Helper()
	out := make([]events.Record, 0, len(recs))
	for _, r := range recs {
		b, err := events.Marshal(r.Meta, r.Event)
		if err != nil {
			tb.Fatalf("marshal %T: %v", r.Event, err)
		}
		back, err := events.Unmarshal(b)
		if err != nil {
			tb.Fatalf("unmarshal %s: %v", b, err)
		}
		out = append(out, back)
	}
	return out
}

func foldServer(recs []events.Record) domain.Server {
	var s domain.Server
	for _, r := range recs {
		s = domain.ApplyServer(s, r)
	}
	return s
}

func srvMeta(at events.Time) events.Meta {
	return events.Meta{AggregateID: srvID, ServerID: srvID, Owner: owner, OccurredAt: at}
}

func ptr[T any](v T) *T { return &v }

// baseAttrs are the attributes recorded by the "given" server creation.
func baseAttrs() events.ServerAttrs {
	return events.ServerAttrs{
		Name: "Linear", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
		ServerDescription: ptr("Issue tracker"), AllowedTools: []string{"issues.list"},
		RequireApproval: "always", Metadata: map[string]string{"team": "core"},
	}
}

func serverCreated(at events.Time) events.Record {
	return events.Record{Meta: srvMeta(at), Event: events.ServerCreated{ServerAttrs: baseAttrs()}}
}

func serverDeleted(at events.Time, ids ...string) events.Record {
	if ids == nil {
		ids = []string{}
	}
	return events.Record{Meta: srvMeta(at), Event: events.ServerDeleted{CredentialIDs: ids}}
}

func serverUpdated(at events.Time, changed []string, edit func(*events.ServerAttrs)) events.Record {
	a := baseAttrs()
	edit(&a)
	return events.Record{Meta: srvMeta(at), Event: events.ServerUpdated{ChangedFields: changed, ServerAttrs: a}}
}

// validPatch is a createServer request with the required fields only.
func validPatch() domain.ServerPatch {
	return domain.ServerPatch{
		Name:        domain.Value("Linear"),
		ServerLabel: domain.Value("linear"),
		ServerURL:   domain.Value("https://mcp.linear.app/mcp"),
	}
}

type serverCase struct {
	name  string
	given []events.Record
	when  func(s domain.Server) (domain.Server, []events.Record, error)
	want  []events.Record
	err   *wantErr
	check func(t *testing.T, s domain.Server) // optional checks of the returned state
}

// runServerCases runs given/command/want cases and checks the fold: the
// given events plus the recorded ones, replayed directly and through the
// wire, give the state the command returned.
func runServerCases(t *testing.T, cases []serverCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := foldServer(tc.given)
			got, recs, err := tc.when(before)
			checkErr(t, err, tc.err)
			if tc.err != nil {
				if len(recs) != 0 {
					t.Fatalf("a refused command recorded %d events", len(recs))
				}
				return
			}
			checkRecords(t, recs, tc.want)
			history := append(append([]events.Record{}, tc.given...), recs...)
			if replayed := foldServer(history); !reflect.DeepEqual(replayed, got) {
				t.Fatalf("fold of the history differs from the returned state:\n fold     %#v\n returned %#v", replayed, got)
			}
			if replayed := foldServer(viaWire(t, history)); !reflect.DeepEqual(replayed, got) {
				t.Fatalf("fold of the history read back from JSON differs from the returned state:\n fold     %#v\n returned %#v", replayed, got)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

func TestCreateServer(t *testing.T) {
	create := func(p domain.ServerPatch) func(domain.Server) (domain.Server, []events.Record, error) {
		return func(domain.Server) (domain.Server, []events.Record, error) {
			return domain.CreateServer(owner, srvID, p, t0)
		}
	}
	full := validPatch()
	full.ServerDescription = domain.Value("Issue tracker")
	full.AllowedTools = domain.Value([]string{"issues.list", "issues.create"})
	full.RequireApproval = domain.Value("never")
	full.Metadata = domain.Value(map[string]string{"team": "core", "env": ""})
	emptyTools := validPatch()
	emptyTools.AllowedTools = domain.Value([]string{})
	nullable := validPatch()
	nullable.ServerDescription = domain.Null[string]()
	nullable.AllowedTools = domain.Null[[]string]()

	runServerCases(t, []serverCase{
		{
			name: "required fields only take the defaults",
			when: create(validPatch()),
			want: []events.Record{{Meta: srvMeta(t0), Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{
				Name: "Linear", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
				ServerDescription: nil, AllowedTools: nil, RequireApproval: "always", Metadata: map[string]string{},
			}}}},
			check: func(t *testing.T, s domain.Server) {
				if s.ID != srvID || s.Owner != owner || s.CreatedAt != t0 || s.UpdatedAt != t0 || s.Deleted {
					t.Fatalf("state = %+v", s)
				}
				if s.RequireApproval != "always" || s.Metadata == nil || len(s.Metadata) != 0 {
					t.Fatalf("defaults: require_approval %q, metadata %#v; want always and {}", s.RequireApproval, s.Metadata)
				}
			},
		},
		{
			name: "every field given",
			when: create(full),
			want: []events.Record{{Meta: srvMeta(t0), Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{
				Name: "Linear", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
				ServerDescription: ptr("Issue tracker"), AllowedTools: []string{"issues.list", "issues.create"},
				RequireApproval: "never", Metadata: map[string]string{"team": "core", "env": ""},
			}}}},
		},
		{
			name: "allowed_tools [] means no tool and differs from null",
			when: create(emptyTools),
			want: []events.Record{{Meta: srvMeta(t0), Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{
				Name: "Linear", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
				AllowedTools: []string{}, RequireApproval: "always", Metadata: map[string]string{},
			}}}},
			check: func(t *testing.T, s domain.Server) {
				if s.AllowedTools == nil {
					t.Fatal("allowed_tools [] folded to null (every tool)")
				}
			},
		},
		{
			name: "explicit null for the nullable fields",
			when: create(nullable),
			want: []events.Record{{Meta: srvMeta(t0), Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{
				Name: "Linear", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
				RequireApproval: "always", Metadata: map[string]string{},
			}}}},
		},
	})
}

func TestCreateServerRequiredFields(t *testing.T) {
	for _, param := range []string{"name", "server_label", "server_url"} {
		t.Run(param, func(t *testing.T) {
			p := validPatch()
			switch param {
			case "name":
				p.Name = domain.Field[string]{}
			case "server_label":
				p.ServerLabel = domain.Field[string]{}
			case "server_url":
				p.ServerURL = domain.Field[string]{}
			}
			_, recs, err := domain.CreateServer(owner, srvID, p, t0)
			checkErr(t, err, invalid(param))
			if len(recs) != 0 {
				t.Fatalf("recorded %d events", len(recs))
			}
		})
	}
}

// serverRule is one case of a server rule of API.md: a change to a valid
// request and the param of the error it must get ("" when it is valid).
type serverRule struct {
	name  string
	edit  func(p *domain.ServerPatch)
	param string
}

func serverRules() []serverRule {
	name := func(v string) func(*domain.ServerPatch) {
		return func(p *domain.ServerPatch) { p.Name = domain.Value(v) }
	}
	label := func(v string) func(*domain.ServerPatch) {
		return func(p *domain.ServerPatch) { p.ServerLabel = domain.Value(v) }
	}
	url := func(v string) func(*domain.ServerPatch) {
		return func(p *domain.ServerPatch) { p.ServerURL = domain.Value(v) }
	}
	desc := func(v string) func(*domain.ServerPatch) {
		return func(p *domain.ServerPatch) { p.ServerDescription = domain.Value(v) }
	}
	tools := func(v []string) func(*domain.ServerPatch) {
		return func(p *domain.ServerPatch) { p.AllowedTools = domain.Value(v) }
	}
	approval := func(v string) func(*domain.ServerPatch) {
		return func(p *domain.ServerPatch) { p.RequireApproval = domain.Value(v) }
	}
	meta := func(v map[string]string) func(*domain.ServerPatch) {
		return func(p *domain.ServerPatch) { p.Metadata = domain.Value(v) }
	}
	nTools := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "tool_" + strings.Repeat("x", i%7) + strconv.Itoa(i)
		}
		return out
	}
	nPairs := func(n int) map[string]string {
		out := map[string]string{}
		for i := range n {
			out["k"+strconv.Itoa(i)] = "v"
		}
		return out
	}
	urlOf := func(n int) string { // an https URL of exactly n characters
		const base = "https://example.com/"
		return base + strings.Repeat("a", n-len(base))
	}
	return []serverRule{
		{"name 1 char", name("x"), ""},
		{"name 255 chars", name(strings.Repeat("n", 255)), ""},
		{"name 255 multibyte chars", name(strings.Repeat("é", 255)), ""},
		{"name empty", name(""), "name"},
		{"name 256 chars", name(strings.Repeat("n", 256)), "name"},
		{"name 256 multibyte chars", name(strings.Repeat("é", 256)), "name"},
		{"name invalid UTF-8", name("bad\xff"), "name"},
		{"name null", func(p *domain.ServerPatch) { p.Name = domain.Null[string]() }, "name"},

		{"server_label all allowed characters", label("Linear_v2.prod-EU"), ""},
		{"server_label 255 chars", label(strings.Repeat("l", 255)), ""},
		{"server_label empty", label(""), "server_label"},
		{"server_label 256 chars", label(strings.Repeat("l", 256)), "server_label"},
		{"server_label with a space", label("linear app"), "server_label"},
		{"server_label with a slash", label("linear/app"), "server_label"},
		{"server_label with a colon", label("linear:app"), "server_label"},
		{"server_label non-ASCII letter", label("liné"), "server_label"},
		{"server_label trailing newline", label("linear\n"), "server_label"},
		{"server_label null", func(p *domain.ServerPatch) { p.ServerLabel = domain.Null[string]() }, "server_label"},

		{"server_url http", url("http://mcp.example.com/mcp"), ""},
		{"server_url https with port and query", url("https://mcp.example.com:8443/mcp?x=1"), ""},
		{"server_url 2048 chars", url(urlOf(2048)), ""},
		{"server_url 2049 chars", url(urlOf(2049)), "server_url"},
		{"server_url empty", url(""), "server_url"},
		{"server_url relative", url("/mcp"), "server_url"},
		{"server_url without scheme", url("mcp.example.com/mcp"), "server_url"},
		{"server_url ftp", url("ftp://mcp.example.com/"), "server_url"},
		{"server_url ws", url("ws://mcp.example.com/"), "server_url"},
		{"server_url javascript", url("javascript:alert(1)"), "server_url"},
		{"server_url no host", url("https:///mcp"), "server_url"},
		{"server_url scheme only", url("https://"), "server_url"},
		{"server_url user and password", url("https://user:pass@mcp.example.com/mcp"), "server_url"},
		{"server_url user only", url("https://token@mcp.example.com/mcp"), "server_url"},
		{"server_url with a space", url("https://mcp.example.com/a b\n"), "server_url"},
		{"server_url null", func(p *domain.ServerPatch) { p.ServerURL = domain.Null[string]() }, "server_url"},

		{"server_description empty", desc(""), ""},
		{"server_description 10000 chars", desc(strings.Repeat("d", 10000)), ""},
		{"server_description 10001 chars", desc(strings.Repeat("d", 10001)), "server_description"},

		{"allowed_tools 1000 names", tools(nTools(1000)), ""},
		{"allowed_tools 1001 names", tools(nTools(1001)), "allowed_tools"},
		{"allowed_tools name 255 chars", tools([]string{strings.Repeat("t", 255)}), ""},
		{"allowed_tools name 256 chars", tools([]string{strings.Repeat("t", 256)}), "allowed_tools"},
		{"allowed_tools empty name", tools([]string{"a", ""}), "allowed_tools"},
		{"allowed_tools duplicate", tools([]string{"issues.list", "issues.create", "issues.list"}), "allowed_tools"},

		{"require_approval always", approval("always"), ""},
		{"require_approval never", approval("never"), ""},
		{"require_approval other", approval("sometimes"), "require_approval"},
		{"require_approval wrong case", approval("Always"), "require_approval"},
		{"require_approval empty", approval(""), "require_approval"},
		{"require_approval null", func(p *domain.ServerPatch) { p.RequireApproval = domain.Null[string]() }, "require_approval"},

		{"metadata 16 pairs", meta(nPairs(16)), ""},
		{"metadata 17 pairs", meta(nPairs(17)), "metadata"},
		{"metadata key 64 chars", meta(map[string]string{strings.Repeat("k", 64): "v"}), ""},
		{"metadata key 65 chars", meta(map[string]string{strings.Repeat("k", 65): "v"}), "metadata"},
		{"metadata empty key", meta(map[string]string{"": "v"}), "metadata"},
		{"metadata empty value", meta(map[string]string{"k": ""}), ""},
		{"metadata value 512 chars", meta(map[string]string{"k": strings.Repeat("v", 512)}), ""},
		{"metadata value 512 multibyte chars", meta(map[string]string{"k": strings.Repeat("ü", 512)}), ""},
		{"metadata value 513 chars", meta(map[string]string{"k": strings.Repeat("v", 513)}), "metadata"},
		{"metadata null", func(p *domain.ServerPatch) { p.Metadata = domain.Null[map[string]string]() }, "metadata"},
	}
}

// TestServerRules checks every server rule of API.md on create and on update:
// a broken rule is refused with its param and records nothing; a valid edge
// value is accepted.
func TestServerRules(t *testing.T) {
	for _, r := range serverRules() {
		t.Run("create/"+r.name, func(t *testing.T) {
			p := validPatch()
			r.edit(&p)
			_, recs, err := domain.CreateServer(owner, srvID, p, t0)
			if r.param == "" {
				checkErr(t, err, nil)
				if len(recs) != 1 {
					t.Fatalf("recorded %d events, want 1", len(recs))
				}
				return
			}
			checkErr(t, err, invalid(r.param))
			if len(recs) != 0 {
				t.Fatalf("a refused create recorded %d events", len(recs))
			}
		})
		t.Run("update/"+r.name, func(t *testing.T) {
			s := foldServer([]events.Record{serverCreated(t0)})
			var p domain.ServerPatch
			r.edit(&p)
			got, recs, err := domain.UpdateServer(s, p, t1)
			if r.param == "" {
				checkErr(t, err, nil)
				if len(recs) > 1 {
					t.Fatalf("recorded %d events, want at most 1", len(recs))
				}
				if replayed := foldServer(append([]events.Record{serverCreated(t0)}, recs...)); !reflect.DeepEqual(replayed, got) {
					t.Fatalf("fold differs from the returned state:\n fold     %#v\n returned %#v", replayed, got)
				}
				return
			}
			checkErr(t, err, invalid(r.param))
			if len(recs) != 0 {
				t.Fatalf("a refused update recorded %d events", len(recs))
			}
		})
	}
}

func TestUpdateServer(t *testing.T) {
	update := func(p domain.ServerPatch) func(domain.Server) (domain.Server, []events.Record, error) {
		return func(s domain.Server) (domain.Server, []events.Record, error) { return domain.UpdateServer(s, p, t1) }
	}
	created := []events.Record{serverCreated(t0)}
	all := domain.ServerPatch{
		Name:              domain.Value("Linear EU"),
		ServerLabel:       domain.Value("linear-eu"),
		ServerURL:         domain.Value("https://eu.mcp.linear.app/mcp"),
		ServerDescription: domain.Value("EU tracker"),
		AllowedTools:      domain.Value([]string{"issues.list", "issues.create"}),
		RequireApproval:   domain.Value("never"),
		Metadata:          domain.Value(map[string]string{"team": "eu"}),
	}
	same := domain.ServerPatch{
		Name:              domain.Value("Linear"),
		ServerLabel:       domain.Value("linear"),
		ServerURL:         domain.Value("https://mcp.linear.app/mcp"),
		ServerDescription: domain.Value("Issue tracker"),
		AllowedTools:      domain.Value([]string{"issues.list"}),
		RequireApproval:   domain.Value("always"),
		Metadata:          domain.Value(map[string]string{"team": "core"}),
	}
	unchanged := func(t *testing.T, s domain.Server) {
		if s.UpdatedAt != t0 {
			t.Fatalf("updated_at = %s after a no-op update, want %s", s.UpdatedAt, t0)
		}
	}

	runServerCases(t, []serverCase{
		{
			name:  "one field changes, the others stay",
			given: created,
			when:  update(domain.ServerPatch{Name: domain.Value("Linear EU")}),
			want: []events.Record{serverUpdated(t1, []string{"name"}, func(a *events.ServerAttrs) {
				a.Name = "Linear EU"
			})},
			check: func(t *testing.T, s domain.Server) {
				if s.Name != "Linear EU" || s.ServerLabel != "linear" || *s.ServerDescription != "Issue tracker" {
					t.Fatalf("state = %+v", s.ServerAttrs)
				}
				if s.CreatedAt != t0 || s.UpdatedAt != t1 {
					t.Fatalf("created_at %s updated_at %s, want %s and %s", s.CreatedAt, s.UpdatedAt, t0, t1)
				}
			},
		},
		{
			name:  "every field changes, listed in a stable order",
			given: created,
			when:  update(all),
			want: []events.Record{serverUpdated(t1,
				[]string{"name", "server_label", "server_url", "server_description", "allowed_tools", "require_approval", "metadata"},
				func(a *events.ServerAttrs) {
					*a = events.ServerAttrs{Name: "Linear EU", ServerLabel: "linear-eu", ServerURL: "https://eu.mcp.linear.app/mcp",
						ServerDescription: ptr("EU tracker"), AllowedTools: []string{"issues.list", "issues.create"},
						RequireApproval: "never", Metadata: map[string]string{"team": "eu"}}
				})},
		},
		{
			name:  "only the fields whose value differs are listed",
			given: created,
			when: update(domain.ServerPatch{Name: domain.Value("Linear"), RequireApproval: domain.Value("never"),
				Metadata: domain.Value(map[string]string{"team": "core"})}),
			want: []events.Record{serverUpdated(t1, []string{"require_approval"}, func(a *events.ServerAttrs) {
				a.RequireApproval = "never"
			})},
		},
		{
			name:  "explicit null clears server_description",
			given: created,
			when:  update(domain.ServerPatch{ServerDescription: domain.Null[string]()}),
			want: []events.Record{serverUpdated(t1, []string{"server_description"}, func(a *events.ServerAttrs) {
				a.ServerDescription = nil
			})},
			check: func(t *testing.T, s domain.Server) {
				if s.ServerDescription != nil {
					t.Fatalf("server_description = %q, want null", *s.ServerDescription)
				}
			},
		},
		{
			name:  "explicit null clears allowed_tools (every tool)",
			given: created,
			when:  update(domain.ServerPatch{AllowedTools: domain.Null[[]string]()}),
			want: []events.Record{serverUpdated(t1, []string{"allowed_tools"}, func(a *events.ServerAttrs) {
				a.AllowedTools = nil
			})},
			check: func(t *testing.T, s domain.Server) {
				if s.AllowedTools != nil {
					t.Fatalf("allowed_tools = %#v, want null", s.AllowedTools)
				}
			},
		},
		{
			name:  "allowed_tools [] (no tool) differs from the list",
			given: created,
			when:  update(domain.ServerPatch{AllowedTools: domain.Value([]string{})}),
			want: []events.Record{serverUpdated(t1, []string{"allowed_tools"}, func(a *events.ServerAttrs) {
				a.AllowedTools = []string{}
			})},
		},
		{
			name: "allowed_tools [] after null is a change",
			given: append(append([]events.Record{}, created...), serverUpdated(t1, []string{"allowed_tools"},
				func(a *events.ServerAttrs) { a.AllowedTools = nil })),
			when: func(s domain.Server) (domain.Server, []events.Record, error) {
				return domain.UpdateServer(s, domain.ServerPatch{AllowedTools: domain.Value([]string{})}, t2)
			},
			want: []events.Record{serverUpdated(t2, []string{"allowed_tools"}, func(a *events.ServerAttrs) {
				a.AllowedTools = []string{}
			})},
		},
		{
			name:  "metadata {} clears the metadata",
			given: created,
			when:  update(domain.ServerPatch{Metadata: domain.Value(map[string]string{})}),
			want: []events.Record{serverUpdated(t1, []string{"metadata"}, func(a *events.ServerAttrs) {
				a.Metadata = map[string]string{}
			})},
		},
		{
			name:  "empty patch records nothing",
			given: created,
			when:  update(domain.ServerPatch{}),
			want:  nil,
			check: unchanged,
		},
		{
			name:  "patch with the current values records nothing",
			given: created,
			when:  update(same),
			want:  nil,
			check: unchanged,
		},
		{
			name: "null on an already null field records nothing",
			given: append(append([]events.Record{}, created...), serverUpdated(t1, []string{"server_description"},
				func(a *events.ServerAttrs) { a.ServerDescription = nil })),
			when: func(s domain.Server) (domain.Server, []events.Record, error) {
				return domain.UpdateServer(s, domain.ServerPatch{ServerDescription: domain.Null[string]()}, t2)
			},
			want: nil,
		},
		{
			name:  "a broken rule records nothing, even beside a valid change",
			given: created,
			when:  update(domain.ServerPatch{Name: domain.Value("Linear EU"), ServerURL: domain.Value("ftp://x")}),
			err:   invalid("server_url"),
		},
		{
			name: "unknown server",
			when: update(domain.ServerPatch{Name: domain.Value("x")}),
			err:  notFound,
		},
		{
			name:  "update after delete",
			given: []events.Record{serverCreated(t0), serverDeleted(t1)},
			when: func(s domain.Server) (domain.Server, []events.Record, error) {
				return domain.UpdateServer(s, domain.ServerPatch{Name: domain.Value("x")}, t2)
			},
			err: notFound,
		},
	})
}

// TestUpdateServerDoesNotAlias checks that the state returned by a command
// shares no slice or map with the request or the previous state.
func TestUpdateServerDoesNotAlias(t *testing.T) {
	tools := []string{"a", "b"}
	meta := map[string]string{"k": "v"}
	before := foldServer([]events.Record{serverCreated(t0)})
	after, _, err := domain.UpdateServer(before, domain.ServerPatch{
		AllowedTools: domain.Value(tools), Metadata: domain.Value(meta)}, t1)
	checkErr(t, err, nil)
	tools[0] = "changed"
	meta["k"] = "changed"
	if after.AllowedTools[0] != "a" || after.Metadata["k"] != "v" {
		t.Fatalf("state changed with the request: %+v", after.ServerAttrs)
	}
	if before.AllowedTools[0] != "issues.list" || before.Metadata["team"] != "core" {
		t.Fatalf("previous state changed by the update: %+v", before.ServerAttrs)
	}
}

func TestDeleteServer(t *testing.T) {
	const (
		credA = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d01"
		credB = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d02"
	)
	runServerCases(t, []serverCase{
		{
			name:  "without credentials",
			given: []events.Record{serverCreated(t0)},
			when: func(s domain.Server) (domain.Server, []events.Record, error) {
				return domain.DeleteServer(s, nil, t1)
			},
			want: []events.Record{serverDeleted(t1)},
			check: func(t *testing.T, s domain.Server) {
				if !s.Deleted {
					t.Fatal("state not deleted")
				}
			},
		},
		{
			name:  "lists the credential ids, sorted",
			given: []events.Record{serverCreated(t0)},
			when: func(s domain.Server) (domain.Server, []events.Record, error) {
				return domain.DeleteServer(s, []string{credB, credA}, t1)
			},
			want: []events.Record{serverDeleted(t1, credA, credB)},
		},
		{
			name:  "after an update",
			given: []events.Record{serverCreated(t0), serverUpdated(t1, []string{"name"}, func(a *events.ServerAttrs) { a.Name = "N" })},
			when: func(s domain.Server) (domain.Server, []events.Record, error) {
				return domain.DeleteServer(s, []string{credA}, t2)
			},
			want: []events.Record{serverDeleted(t2, credA)},
		},
		{
			name:  "delete after delete",
			given: []events.Record{serverCreated(t0), serverDeleted(t1)},
			when: func(s domain.Server) (domain.Server, []events.Record, error) {
				return domain.DeleteServer(s, nil, t2)
			},
			err: notFound,
		},
		{
			name: "unknown server",
			when: func(s domain.Server) (domain.Server, []events.Record, error) {
				return domain.DeleteServer(s, nil, t1)
			},
			err: notFound,
		},
	})
}

// TestApplyServerHistory replays a longer history and checks each step.
func TestApplyServerHistory(t *testing.T) {
	s, recs, err := domain.CreateServer(owner, srvID, validPatch(), t0)
	checkErr(t, err, nil)
	history := recs
	steps := []domain.ServerPatch{
		{Name: domain.Value("A")},
		{ServerDescription: domain.Value("d"), AllowedTools: domain.Value([]string{"x"})},
		{ServerDescription: domain.Null[string](), Metadata: domain.Value(map[string]string{"a": "b"})},
		{RequireApproval: domain.Value("never")},
	}
	for i, p := range steps {
		now := events.NewTime(t0.Add(time.Duration(i+1) * time.Minute))
		s, recs, err = domain.UpdateServer(s, p, now)
		checkErr(t, err, nil)
		history = append(history, recs...)
		if got := foldServer(history); !reflect.DeepEqual(got, s) {
			t.Fatalf("step %d: fold %#v, command %#v", i, got, s)
		}
	}
	s, recs, err = domain.DeleteServer(s, nil, t2)
	checkErr(t, err, nil)
	history = append(history, recs...)
	if got := foldServer(viaWire(t, history)); !reflect.DeepEqual(got, s) {
		t.Fatalf("fold through JSON %#v, command %#v", got, s)
	}
	want := events.ServerAttrs{Name: "A", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
		AllowedTools: []string{"x"}, RequireApproval: "never", Metadata: map[string]string{"a": "b"}}
	if !reflect.DeepEqual(s.ServerAttrs, want) || !s.Deleted || s.CreatedAt != t0 || s.UpdatedAt != t2 {
		t.Fatalf("final state %#v", s)
	}
}

func TestServerURLPortAndWhitespace(t *testing.T) {
	for _, u := range []string{"https://x.example:0/mcp", "https://x.example:99999/mcp", "https://x.example/a b", "https://x.example/#"} {
		_, _, err := domain.CreateServer(events.Owner{Account: "a"}, domain.ServerID([16]byte{1}),
			domain.ServerPatch{Name: domain.Value("n"), ServerLabel: domain.Value("l"), ServerURL: domain.Value(u)}, events.NewTime(time.Unix(0, 0)))
		var de *domain.Error
		if !errors.As(err, &de) || de.Param != "server_url" {
			t.Errorf("%q: got %v, want invalid server_url", u, err)
		}
	}
}
