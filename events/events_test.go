package events_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/events"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	srvID  = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d7e"
	credID = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d7f"
)

var (
	at    = events.NewTime(time.Date(2026, 4, 29, 12, 0, 0, 123_000_000, time.UTC))
	owner = events.Owner{Account: "acct_a", User: "user-42"}
)

func ptr[T any](v T) *T { return &v }

func srvMeta(id string) events.Meta {
	return events.Meta{ID: id, AggregateID: srvID, ServerID: srvID, Owner: owner, OccurredAt: at}
}

func credMeta(id string) events.Meta {
	return events.Meta{ID: id, AggregateID: credID, ServerID: srvID, Owner: owner, OccurredAt: at}
}

// samples holds one representative record per event type; the golden file
// of each type pins its JSON in the envelope.
func samples() map[string]events.Record {
	return map[string]events.Record{
		events.TypeServerCreated: {Meta: srvMeta("01JSXQ6Z8Y0000000000000001"), Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{
			Name: "Linear", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
			ServerDescription: ptr("Issue tracker"), AllowedTools: []string{"issues.list", "issues.create"},
			RequireApproval: "always", Metadata: map[string]string{"team": "core", "env": "prod"},
		}}},
		events.TypeServerUpdated: {Meta: srvMeta("01JSXQ6Z8Y0000000000000002"), Event: events.ServerUpdated{
			ChangedFields: []string{"server_description", "allowed_tools", "require_approval"},
			ServerAttrs: events.ServerAttrs{
				Name: "Linear", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
				ServerDescription: nil, AllowedTools: nil, RequireApproval: "never", Metadata: map[string]string{},
			}}},
		events.TypeServerDeleted: {Meta: srvMeta("01JSXQ6Z8Y0000000000000003"), Event: events.ServerDeleted{
			CredentialIDs: []string{credID, "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d80"}}},
		events.TypeCredentialCreated: {Meta: credMeta("01JSXQ6Z8Y0000000000000004"), Event: events.CredentialCreated{
			Name: ptr("Personal Linear token"), AuthType: "bearer", AuthorizationPreview: ptr("****...cdef"),
			HeaderNames: []string{}, ExpiresAt: ptr(events.NewTime(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))),
			Secret: &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte("0123456789ab"), Ciphertext: []byte("opaque ciphertext+tag")},
		}},
		events.TypeCredentialRevoked: {Meta: credMeta("01JSXQ6Z8Y0000000000000005"), Event: events.CredentialRevoked{}},
		events.TypeCredentialDeleted: {Meta: credMeta("01JSXQ6Z8Y0000000000000006"), Event: events.CredentialDeleted{}},
		events.TypeCredentialUsed: {Meta: credMeta("01JSXQ6Z8Y0000000000000007"), Event: events.CredentialUsed{
			Operation: "test_server", Outcome: "failed", ErrorCode: "upstream_unauthorized", ToolCount: 0, TargetHost: "mcp.linear.app",
		}},
		events.TypeServerToolsChanged: {Meta: srvMeta("01JSXQ6Z8Y0000000000000008"), Event: events.ServerToolsChanged{
			Added: []string{"issues.create"}, Removed: []string{"issues.delete"}, Changed: []string{"issues.list"},
			Tools: map[string]string{
				"issues.create": "3f0c6f2a1f1c4b7e9d3a0b5c2e8f71d64a9b0c3d2e1f0a9b8c7d6e5f4a3b2c1d",
				"issues.list":   "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
			},
			Source: "proxy",
		}},
	}
}

// TestGolden pins the JSON of every event type in its envelope. Run
// `go test ./events -update` to rewrite the files after a deliberate change
// (which, for a stored event type, also needs a version bump and an upcaster).
func TestGolden(t *testing.T) {
	s := samples()
	if len(s) != len(events.Types()) {
		t.Fatalf("%d samples for %d event types", len(s), len(events.Types()))
	}
	for _, typ := range events.Types() {
		t.Run(typ, func(t *testing.T) {
			rec, ok := s[typ]
			if !ok {
				t.Fatalf("no sample for %s", typ)
			}
			if rec.Event.EventType() != typ {
				t.Fatalf("sample of %s has type %s", typ, rec.Event.EventType())
			}
			b, err := events.Marshal(rec.Meta, rec.Event)
			if err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, b, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", typ+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./events -update to create it)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Fatalf("%s changed:\n--- got\n%s--- want\n%s", path, pretty.Bytes(), want)
			}
			// What is stored must stay readable: the golden decodes to the sample.
			back, err := events.Unmarshal(want)
			if err != nil {
				t.Fatalf("golden does not decode: %v", err)
			}
			if !reflect.DeepEqual(back, rec) {
				t.Fatalf("golden decodes to\n %#v\nwant\n %#v", back, rec)
			}
		})
	}
}

// TestEnvelopeFields checks the envelope keys documented for audit consumers.
func TestEnvelopeFields(t *testing.T) {
	rec := samples()[events.TypeCredentialCreated]
	b, err := events.Marshal(rec.Meta, rec.Event)
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range env {
		keys = append(keys, k)
	}
	want := []string{"aggregate_id", "data", "id", "occurred_at", "owner", "server_id", "type", "version"}
	if !sameSet(keys, want) {
		t.Fatalf("envelope keys %v, want %v", keys, want)
	}
	if string(env["type"]) != `"mcp.credential.created"` || string(env["version"]) != "1" ||
		string(env["occurred_at"]) != `"2026-04-29T12:00:00.123Z"` ||
		string(env["owner"]) != `{"account":"acct_a","user":"user-42"}` {
		t.Fatalf("envelope %s", b)
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(env["data"], &data); err != nil {
		t.Fatal(err)
	}
	keys = keys[:0]
	for k := range data {
		keys = append(keys, k)
	}
	// Only the sealed secret, never a plaintext secret field.
	want = []string{"auth_type", "authorization_preview", "expires_at", "header_names", "name", "secret"}
	if !sameSet(keys, want) {
		t.Fatalf("credential created data keys %v, want %v", keys, want)
	}
	var secret map[string]json.RawMessage
	if err := json.Unmarshal(data["secret"], &secret); err != nil {
		t.Fatal(err)
	}
	keys = keys[:0]
	for k := range secret {
		keys = append(keys, k)
	}
	if !sameSet(keys, []string{"alg", "nonce", "ciphertext"}) {
		t.Fatalf("secret keys %v, want alg, nonce, ciphertext", keys)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

func TestOwnerWithoutUser(t *testing.T) {
	rec := samples()[events.TypeCredentialRevoked]
	rec.Owner = events.Owner{Account: "acct_a"}
	b, err := events.Marshal(rec.Meta, rec.Event)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"owner":{"account":"acct_a"}`) {
		t.Fatalf("owner without user: %s", b)
	}
	back, err := events.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Owner != rec.Owner {
		t.Fatalf("owner %+v, want %+v", back.Owner, rec.Owner)
	}
}

// TestRoundTrip checks Marshal then Unmarshal gives back the same record.
func TestRoundTrip(t *testing.T) {
	cases := map[string]events.Record{}
	for typ, r := range samples() {
		cases[typ] = r
	}
	cases["server created minimal"] = events.Record{Meta: srvMeta("01JSXQ6Z8Y0000000000000010"), Event: events.ServerCreated{
		ServerAttrs: events.ServerAttrs{Name: "n", ServerLabel: "l", ServerURL: "http://x", RequireApproval: "always", Metadata: map[string]string{}}}}
	cases["server updated empty tools"] = events.Record{Meta: srvMeta("01JSXQ6Z8Y0000000000000011"), Event: events.ServerUpdated{
		ChangedFields: []string{"allowed_tools"},
		ServerAttrs:   events.ServerAttrs{Name: "n", ServerLabel: "l", ServerURL: "http://x", AllowedTools: []string{}, RequireApproval: "always", Metadata: map[string]string{}}}}
	cases["credential created none"] = events.Record{Meta: credMeta("01JSXQ6Z8Y0000000000000012"), Event: events.CredentialCreated{
		AuthType: "none", HeaderNames: []string{}}}
	cases["credential created headers"] = events.Record{Meta: credMeta("01JSXQ6Z8Y0000000000000013"), Event: events.CredentialCreated{
		AuthType: "headers", HeaderNames: []string{"X-Api-Key", "X-Tenant"},
		Secret: &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte{0, 1, 2, 255}, Ciphertext: []byte{9, 8, 7}}}}
	cases["credential used connected"] = events.Record{Meta: credMeta("01JSXQ6Z8Y0000000000000014"), Event: events.CredentialUsed{
		Operation: "test_server", Outcome: "connected", ToolCount: 3, TargetHost: "mcp.linear.app"}}
	for name, rec := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := events.Marshal(rec.Meta, rec.Event)
			if err != nil {
				t.Fatal(err)
			}
			back, err := events.Unmarshal(b)
			if err != nil {
				t.Fatalf("unmarshal %s: %v", b, err)
			}
			if !reflect.DeepEqual(back, rec) {
				t.Fatalf("round trip of %s:\n got  %#v\n want %#v", b, back, rec)
			}
		})
	}
}

func TestUnmarshalErrors(t *testing.T) {
	good := func(edit func(env map[string]any)) []byte {
		rec := samples()[events.TypeServerDeleted]
		b, err := events.Marshal(rec.Meta, rec.Event)
		if err != nil {
			t.Fatal(err)
		}
		var env map[string]any
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		edit(env)
		out, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if _, err := events.Unmarshal(good(func(map[string]any) {})); err != nil {
		t.Fatalf("the unedited envelope does not decode: %v", err)
	}
	for name, body := range map[string][]byte{
		"unknown type":              good(func(env map[string]any) { env["type"] = "mcp.server.renamed" }),
		"empty type":                good(func(env map[string]any) { env["type"] = "" }),
		"type of another case":      good(func(env map[string]any) { env["type"] = "MCP.SERVER.DELETED" }),
		"unsupported version 2":     good(func(env map[string]any) { env["version"] = 2 }),
		"unsupported version 0":     good(func(env map[string]any) { env["version"] = 0 }),
		"missing version":           good(func(env map[string]any) { delete(env, "version") }),
		"data of the wrong shape":   good(func(env map[string]any) { env["data"] = map[string]any{"credential_ids": "x"} }),
		"bad occurred_at":           good(func(env map[string]any) { env["occurred_at"] = "yesterday" }),
		"not JSON":                  []byte("not json"),
		"JSON but not an object":    []byte(`["mcp.server.deleted"]`),
		"truncated":                 []byte(`{"id":"x","type":"mcp.server.deleted","version":1,`),
		"unknown type, known shape": []byte(`{"type":"mcp.credential.rotated","version":1,"data":{}}`),
	} {
		t.Run(name, func(t *testing.T) {
			if rec, err := events.Unmarshal(body); err == nil {
				t.Fatalf("Unmarshal(%s) = %#v, want an error", body, rec)
			}
		})
	}
}

func TestDecodeNamesTheProblem(t *testing.T) {
	_, err := events.Decode(events.Envelope{Type: "mcp.server.renamed", Version: 1})
	if err == nil || !strings.Contains(err.Error(), "mcp.server.renamed") {
		t.Fatalf("unknown type error = %v", err)
	}
	_, err = events.Decode(events.Envelope{Type: events.TypeServerDeleted, Version: 7, Data: json.RawMessage(`{}`)})
	if err == nil || !strings.Contains(err.Error(), "v7") {
		t.Fatalf("unsupported version error = %v", err)
	}
}

func TestSubjects(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{events.ServerSubject(srvID), "vault." + srvID + ".server"},
		{events.CredentialSubject(srvID, credID), "vault." + srvID + ".credential." + credID},
		{events.ServerTree(srvID), "vault." + srvID + ".>"},
		{events.UseSubject(srvID, credID), "vault." + srvID + ".credential." + credID + ".used"},
		{events.SubjectOf(events.Record{Meta: events.Meta{AggregateID: srvID, ServerID: srvID}, Event: events.ServerUpdated{}}),
			"vault." + srvID + ".server"},
		{events.SubjectOf(events.Record{Meta: events.Meta{AggregateID: credID, ServerID: srvID}, Event: events.CredentialRevoked{}}),
			"vault." + srvID + ".credential." + credID},
		{events.SubjectOf(events.Record{Meta: events.Meta{AggregateID: credID, ServerID: srvID}, Event: events.CredentialUsed{}}),
			"vault." + srvID + ".credential." + credID + ".used"},
	} {
		if tc.got != tc.want {
			t.Errorf("subject %q, want %q", tc.got, tc.want)
		}
	}
	if !strings.HasPrefix(events.ServerSubject(srvID), events.SubjectPrefix) {
		t.Errorf("server subject does not start with %q", events.SubjectPrefix)
	}
	// Every event subject of a server lies under its tree filter, and no
	// other server's does.
	tree := strings.TrimSuffix(events.ServerTree(srvID), ">")
	other := "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d7f"
	for _, s := range []string{events.ServerSubject(srvID), events.CredentialSubject(srvID, credID),
		events.ToolsSubject(srvID), events.CredentialUsedSubject(srvID, credID)} {
		if !strings.HasPrefix(s, tree) {
			t.Errorf("%q is not under %q", s, events.ServerTree(srvID))
		}
	}
	for _, s := range []string{events.ServerSubject(other), events.CredentialSubject(other, credID)} {
		if strings.HasPrefix(s, tree) {
			t.Errorf("%q of another server is under %q", s, events.ServerTree(srvID))
		}
	}
	// Subjects are NATS tokens: no empty token, no space, no wildcard.
	for _, s := range []string{events.ServerSubject(srvID), events.CredentialSubject(srvID, credID),
		events.ToolsSubject(srvID), events.CredentialUsedSubject(srvID, credID)} {
		for _, tok := range strings.Split(s, ".") {
			if tok == "" || strings.ContainsAny(tok, " \t*>") {
				t.Errorf("subject %q has a bad token %q", s, tok)
			}
		}
	}
}

func TestTypes(t *testing.T) {
	want := []string{"mcp.server.created", "mcp.server.updated", "mcp.server.deleted",
		"mcp.credential.created", "mcp.credential.revoked", "mcp.credential.deleted", "mcp.credential.used",
		"mcp.server.tools_changed"}
	if !reflect.DeepEqual(events.Types(), want) {
		t.Fatalf("Types() = %v, want %v", events.Types(), want)
	}
	for typ, rec := range samples() {
		if rec.Event.SchemaVersion() != 1 {
			t.Errorf("%s is at version %d, want 1", typ, rec.Event.SchemaVersion())
		}
	}
}

func TestTime(t *testing.T) {
	tm := events.NewTime(time.Date(2026, 4, 29, 14, 0, 0, 123_456_789, time.FixedZone("CEST", 2*3600)))
	b, err := json.Marshal(tm)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `"2026-04-29T12:00:00.123Z"` {
		t.Fatalf("marshal = %s", b)
	}
	if tm.String() != "2026-04-29T12:00:00.123Z" {
		t.Fatalf("String() = %s", tm.String())
	}
	zero := events.NewTime(time.Date(2026, 4, 29, 12, 0, 0, 0, time.UTC))
	if zero.String() != "2026-04-29T12:00:00.000Z" {
		t.Fatalf("whole second = %s, want the milliseconds written out", zero.String())
	}
	for _, in := range []string{`"2026-04-29T12:00:00.123Z"`, `"2026-04-29T14:00:00.123456+02:00"`, `"2026-04-29T12:00:00.1239Z"`} {
		var got events.Time
		if err := json.Unmarshal([]byte(in), &got); err != nil {
			t.Fatalf("unmarshal %s: %v", in, err)
		}
		if got != events.NewTime(time.Date(2026, 4, 29, 12, 0, 0, 123_000_000, time.UTC)) {
			t.Fatalf("unmarshal %s = %s", in, got)
		}
	}
	for _, in := range []string{`"2026-04-29"`, `"12:00"`, `1714392000`, `"2026-04-29 12:00:00Z"`} {
		var got events.Time
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Fatalf("unmarshal %s = %s, want an error", in, got)
		}
	}
}

func TestOwnerKey(t *testing.T) {
	// Distinct owners have distinct keys, even when their parts could be
	// concatenated into the same text.
	owners := []events.Owner{
		{Account: "acct_a"}, {Account: "acct_a", User: "u"}, {Account: "acct_a|", User: "u"},
		{Account: "acct_a", User: "|u"}, {Account: "acct_", User: "au"}, {Account: "6:acct_a", User: ""},
		{Account: "a", User: "1:b|c"}, {Account: "a|1:b", User: "c"},
	}
	seen := map[string]events.Owner{}
	for _, o := range owners {
		k := o.Key()
		if prev, dup := seen[k]; dup {
			t.Fatalf("owners %+v and %+v share the key %q", prev, o, k)
		}
		seen[k] = o
	}
}
