package events_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// FuzzUnmarshal decodes (and upcasts) any message body as the projector
// would, from a stream anyone with publish rights can write to: nothing
// panics, a decoded record survives a re-encoding unchanged, and the domain
// folds it without panicking.
func FuzzUnmarshal(f *testing.F) {
	goldens, _ := filepath.Glob("testdata/*.golden")
	for _, g := range goldens {
		if b, err := os.ReadFile(g); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"type":"mcp.server.created","version":2,"data":{}}`))
	f.Add([]byte(`{"type":"mcp.credential.used","version":1,"data":null}`))
	f.Add([]byte(`{"type":"mcp.unknown","version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := events.Unmarshal(b)
		if err != nil {
			return
		}
		raw, err := events.Marshal(rec.Meta, rec.Event)
		if err != nil {
			t.Fatalf("a decoded event does not encode: %v", err)
		}
		again, err := events.Unmarshal(raw)
		if err != nil {
			t.Fatalf("a re-encoded event does not decode: %v\n%s", err, raw)
		}
		if !reflect.DeepEqual(fzNorm(t, rec), fzNorm(t, again)) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", rec, again)
		}
		s := domain.ApplyServer(domain.Server{}, rec)
		domain.ApplyServer(s, rec)
		c := domain.ApplyCredential(domain.Credential{}, rec)
		domain.ApplyCredential(c, rec)
	})
}

// fzNorm compares records by their JSON form (nil and empty maps and slices
// are the same event on the wire).
func fzNorm(t *testing.T, r events.Record) string {
	t.Helper()
	b, err := json.Marshal(struct {
		M events.Meta
		E events.Event
		T string
	}{r.Meta, r.Event, r.Event.EventType()})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
