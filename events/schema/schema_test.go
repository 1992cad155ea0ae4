package schema_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/events/schema"
)

var update = flag.Bool("update", false, "rewrite the generated section of docs/events.md")

func mustLoad(t *testing.T) *schema.Set {
	t.Helper()
	s, err := schema.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEveryTypeHasASchema: each wire name has a schema at the version the
// code writes, and at every version from 1 up to it (stored events of old
// versions are still read).
func TestEveryTypeHasASchema(t *testing.T) {
	s := mustLoad(t)
	for _, typ := range events.Types() {
		cur := currentVersion(t, typ)
		for v := 1; v <= cur; v++ {
			if !s.Has(typ, v) {
				t.Errorf("no schema events/schemas/%s.v%d.json", typ, v)
			}
		}
		if s.Has(typ, cur+1) {
			t.Errorf("a schema for %s v%d, but the code writes v%d", typ, cur+1, cur)
		}
	}
	for _, k := range s.Keys() {
		if !contains(events.Types(), k.Type) {
			t.Errorf("schema for %s, which is not an event type", k.Type)
		}
	}
}

// currentVersion reads the version the golden file of typ was written in.
func currentVersion(t *testing.T, typ string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", typ+".golden"))
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Version int }
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	return env.Version
}

// TestGoldenEventsValidate: every golden event (current versions in
// events/testdata, older versions in events/testdata/v<N>) satisfies its schema.
func TestGoldenEventsValidate(t *testing.T) {
	s := mustLoad(t)
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*.golden"))
	old, _ := filepath.Glob(filepath.Join("..", "testdata", "v*", "*.golden"))
	files = append(files, old...)
	if len(files) < len(events.Types())+1 {
		t.Fatalf("only %d golden files", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestSchemasRejectBrokenEvents: the schemas are not vacuous; each edit of a
// golden event that breaks the documented contract fails validation, and
// the error names the location without echoing the value.
func TestSchemasRejectBrokenEvents(t *testing.T) {
	s := mustLoad(t)
	golden := func(typ string) map[string]any {
		b, err := os.ReadFile(filepath.Join("..", "testdata", typ+".golden"))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	cases := map[string]func() map[string]any{
		"unknown envelope field": func() map[string]any { m := golden("mcp.server.created"); m["signature"] = "x"; return m },
		"bad aggregate id":       func() map[string]any { m := golden("mcp.server.created"); m["aggregate_id"] = "srv_1"; return m },
		"time without millis": func() map[string]any {
			m := golden("mcp.server.created")
			m["occurred_at"] = "2026-04-29T12:00:00Z"
			return m
		},
		"unknown version": func() map[string]any { m := golden("mcp.server.created"); m["version"] = 9; return m },
		"plaintext secret field": func() map[string]any {
			m := golden("mcp.credential.created")
			data(m)["bearer_token"] = "SECRET-VALUE-123"
			return m
		},
		"v2 without dek_wrapped_by": func() map[string]any {
			m := golden("mcp.credential.created")
			delete(data(m)["secret"].(map[string]any), "dek_wrapped_by")
			return m
		},
		"v1 with dek_wrapped_by": func() map[string]any {
			m := golden("mcp.credential.created")
			m["version"] = 1
			return m
		},
		"bad auth type": func() map[string]any { m := golden("mcp.credential.created"); data(m)["auth_type"] = "basic"; return m },
		"preview too revealing": func() map[string]any {
			m := golden("mcp.credential.created")
			data(m)["authorization_preview"] = "****...abcdef"
			return m
		},
		"bad approval": func() map[string]any {
			m := golden("mcp.server.updated")
			data(m)["require_approval"] = "sometimes"
			return m
		},
		"revoked with fields": func() map[string]any {
			m := golden("mcp.credential.revoked")
			m["data"] = map[string]any{"x": 1}
			return m
		},
		"negative tool count": func() map[string]any { m := golden("mcp.credential.used"); data(m)["tool_count"] = -1; return m },
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			b, _ := json.Marshal(mk())
			err := s.Validate(b)
			if err == nil {
				t.Fatalf("validated: %s", b)
			}
			if strings.Contains(err.Error(), "SECRET-VALUE-123") {
				t.Fatalf("the error echoes a value: %v", err)
			}
		})
	}
}

// TestWrittenEventsValidate: what the events package writes for the samples
// of its own tests validates (Marshal and the schemas agree).
func TestWrittenEventsValidate(t *testing.T) {
	s := mustLoad(t)
	at := events.NewTime(time.Date(2026, 4, 29, 12, 0, 0, 0, time.UTC))
	srv := "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d7e"
	name := "n"
	recs := []struct {
		m events.Meta
		e events.Event
	}{
		{events.Meta{ID: "01JSXQ6Z8Y0000000000000001", AggregateID: srv, ServerID: srv, Owner: events.Owner{Account: "a"}, OccurredAt: at},
			events.ServerCreated{ServerAttrs: events.ServerAttrs{Name: "x", ServerLabel: "l", ServerURL: "https://h/mcp", RequireApproval: "always", Metadata: map[string]string{}}}},
		{events.Meta{ID: "01JSXQ6Z8Y0000000000000002", AggregateID: "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d7f", ServerID: srv, Owner: events.Owner{Account: "a", User: "u"}, OccurredAt: at},
			events.CredentialCreated{Name: &name, AuthType: "none", HeaderNames: []string{}}},
		{events.Meta{ID: "01JSXQ6Z8Y0000000000000003", AggregateID: "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d7f", ServerID: srv, Owner: events.Owner{Account: "a"}, OccurredAt: at},
			events.CredentialRevoked{}},
	}
	for _, r := range recs {
		b, err := events.Marshal(r.m, r.e)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(b); err != nil {
			t.Errorf("%s: %v\n%s", r.e.EventType(), err, b)
		}
	}
}

// TestDocsMatchSchemas: the event reference in docs/events.md is generated
// from the schemas; it fails when they drift (go test ./events/schema
// -update rewrites it).
func TestDocsMatchSchemas(t *testing.T) {
	s := mustLoad(t)
	path := filepath.Join("..", "..", "docs", "events.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := schema.Splice(string(b), s.Markdown())
	if !ok {
		t.Fatalf("%s has no generated section (%s … %s)", path, schema.BeginMarker, schema.EndMarker)
	}
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got != string(b) {
		t.Fatalf("%s is out of date with events/schemas; run go test ./events/schema -update", path)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
