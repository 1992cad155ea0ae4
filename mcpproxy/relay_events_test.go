package mcpproxy

import (
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// An upstream's SSE answer is read as the go-sdk client reads it: priming
// events without data (resumable streams, SEP-1699) and events of other
// names are skipped, an event name with stray spaces is still "message",
// and multi-line data is joined.
func TestReadEventsSkipsPrimingEvents(t *testing.T) {
	stream := "id: 1\ndata: \n\n" + // priming event: no data
		": a comment\n\n" +
		"event: ping\ndata: {\"x\":1}\n\n" +
		"id: 2\nevent: message \ndata: {\"jsonrpc\":\"2.0\",\n" +
		"data: \"id\":\"vault-relay-1\",\"result\":{}}\n\n"
	var got []string
	err := readEvents(strings.NewReader(stream), func(data []byte) (bool, *jsonrpc.Error) {
		got = append(got, string(data))
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "{\"jsonrpc\":\"2.0\",\n\"id\":\"vault-relay-1\",\"result\":{}}"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("events handed on: %q, want only %q", got, want)
	}
}
