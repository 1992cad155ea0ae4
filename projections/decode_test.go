package projections

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/mcpvault/vault/events"
)

// The one-pass decoder gives exactly what events.Unmarshal gives for every
// pinned event (indented as pinned and compact as stored), and leaves every
// other version, type or shape to events.Unmarshal.
func TestFastDecodeMatchesEvents(t *testing.T) {
	files, err := filepath.Glob("../events/testdata/*.golden")
	if err != nil || len(files) < 7 {
		t.Fatalf("golden events: %v %v", files, err)
	}
	for _, f := range files {
		pinned, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, pinned); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"pinned": pinned, "compact": compact.Bytes()} {
			want, err := events.Unmarshal(b)
			if err != nil {
				t.Fatalf("%s %s: %v", f, name, err)
			}
			got, ok := fastDecode(b)
			if !ok {
				t.Fatalf("%s %s: not decoded by the fast path", filepath.Base(f), name)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %s:\nfast   %+v\nevents %+v", filepath.Base(f), name, got, want)
			}
			if m := Decode(7, "vault.x.server", b); m.Err != nil || !reflect.DeepEqual(m.Record.Event, want.Event) || m.Record.Sequence != 7 {
				t.Fatalf("Decode %s %s: %+v", filepath.Base(f), name, m)
			}
		}
		// Other versions, unknown types, null data: events.Unmarshal decides.
		var env map[string]any
		if err := json.Unmarshal(pinned, &env); err != nil {
			t.Fatal(err)
		}
		for _, change := range []func(map[string]any){
			func(e map[string]any) { e["version"] = 2 },
			func(e map[string]any) { e["version"] = 0 },
			func(e map[string]any) { e["type"] = e["type"].(string) + ".v2" },
			func(e map[string]any) { e["data"] = nil },
			func(e map[string]any) { e["data"] = "not an object" },
		} {
			c := map[string]any{}
			for k, v := range env {
				c[k] = v
			}
			change(c)
			b, _ := json.Marshal(c)
			want, werr := events.Unmarshal(b)
			m := Decode(1, "vault.x.server", b)
			if (werr == nil) != (m.Err == nil) {
				t.Fatalf("%s changed %s: events %v, Decode %v", filepath.Base(f), b, werr, m.Err)
			}
			if werr == nil {
				want.Sequence = 1
				if !reflect.DeepEqual(m.Record, want) {
					t.Fatalf("%s changed %s:\nDecode %+v\nevents %+v", filepath.Base(f), b, m.Record, want)
				}
			}
		}
	}
}
