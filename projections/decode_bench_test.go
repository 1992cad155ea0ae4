package projections

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/mcpvault/vault/events"
)

func benchEvent(b *testing.B) []byte {
	raw, err := os.ReadFile("../events/testdata/mcp.credential.created.golden")
	if err != nil {
		b.Fatal(err)
	}
	var c bytes.Buffer
	json.Compact(&c, raw)
	return c.Bytes()
}

// BenchmarkDecodeEvents decodes a stored mcp.credential.created with events.Unmarshal.
func BenchmarkDecodeEvents(b *testing.B) {
	m := benchEvent(b)
	for b.Loop() {
		if _, err := events.Unmarshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeFast decodes the same message with the projector's fast path.
func BenchmarkDecodeFast(b *testing.B) {
	m := benchEvent(b)
	for b.Loop() {
		if _, ok := fastDecode(m); !ok {
			b.Fatal("not decoded")
		}
	}
}
