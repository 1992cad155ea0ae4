package upstream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// hostileTools describes what MustHostileServer answers to tools/list.
type hostileTools struct {
	perPage int // tools per page
	nameLen int // length of each tool name (at least 8)
	filler  int // bytes of description per tool
	pages   int // pages in all; < 0 = endless
}

// MustHostileServer is a sessionless Streamable HTTP MCP server whose tool
// list is as large as the test asks. It counts the tools/list calls and the
// bytes it managed to hand to the client.
func MustHostileServer(tb testing.TB, h hostileTools) (string, *atomic.Int32, *atomic.Int64) {
	tb.Helper()
	var calls atomic.Int32
	var written atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Cursor string `json:"cursor"`
			} `json:"params"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		if len(req.ID) == 0 {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		var result any
		switch req.Method {
		case "initialize":
			result = map[string]any{
				"protocolVersion": "2025-06-18",
				"capabilities":    map[string]any{"tools": map[string]any{}},
				"serverInfo":      map[string]any{"name": "hostile", "version": "1"},
			}
		case "tools/list":
			calls.Add(1)
			n := 0
			if req.Params.Cursor != "" {
				n, _ = strconv.Atoi(req.Params.Cursor)
			}
			tools := make([]any, 0, h.perPage)
			for i := range h.perPage {
				name := fmt.Sprintf("t%07d", n*h.perPage+i)
				name += strings.Repeat("x", max(h.nameLen-len(name), 0))
				tools = append(tools, map[string]any{"name": name, "description": strings.Repeat("d", h.filler),
					"inputSchema": map[string]any{"type": "object"}})
			}
			page := map[string]any{"tools": tools}
			if h.pages < 0 || n+1 < h.pages {
				page["nextCursor"] = strconv.Itoa(n + 1)
			}
			result = page
		default:
			result = map[string]any{}
		}
		raw, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
		w.Header().Set("Content-Type", "application/json")
		n, _ := w.Write(raw)
		written.Add(int64(n))
	}))
	tb.Cleanup(srv.Close)
	return srv.URL, &calls, &written
}

// TestToolListBounded: a hostile upstream cannot make the vault hold, or
// answer with, an unbounded tool list; each bound is a response_too_large
// failure and nothing more is fetched once it is crossed.
func TestToolListBounded(t *testing.T) {
	t.Run("large pages stop at the session byte budget", func(t *testing.T) {
		// 100 pages of ~900 KiB each (under the 1 MiB per-response cap).
		u, calls, written := MustHostileServer(t, hostileTools{perPage: 9, filler: 100 << 10, pages: 100})
		res := localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil)
		MustCode(t, res, CodeResponseTooLarge)
		if got := written.Load(); got > maxSessionBytes+2<<20 {
			t.Fatalf("the vault took %d bytes from the upstream, want about %d at most", got, maxSessionBytes)
		}
		if calls.Load() > 6 {
			t.Fatalf("tools/list calls = %d after the budget was spent", calls.Load())
		}
	})
	t.Run("a page over the per-response cap", func(t *testing.T) {
		u, _, _ := MustHostileServer(t, hostileTools{perPage: 1, filler: 2 << 20, pages: 1})
		MustCode(t, localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil), CodeResponseTooLarge)
	})
	t.Run("too many tools", func(t *testing.T) {
		u, calls, _ := MustHostileServer(t, hostileTools{perPage: 300, pages: 10})
		res := localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil)
		MustCode(t, res, CodeResponseTooLarge)
		if calls.Load() != 4 {
			t.Fatalf("tools/list calls = %d, want 4 (stopped at %d tools)", calls.Load(), maxTools)
		}
	})
	t.Run("exactly the maximum of tools", func(t *testing.T) {
		u, _, _ := MustHostileServer(t, hostileTools{perPage: 100, pages: 10})
		res := localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil)
		if !res.Connected || len(res.ToolNames) != maxTools {
			t.Fatalf("want %d tools, got %d (%+v)", maxTools, len(res.ToolNames), res.Error)
		}
	})
	t.Run("too many bytes of names", func(t *testing.T) {
		// 400 names of 200 bytes = 80,000 bytes > 64 KiB, under the count.
		u, _, _ := MustHostileServer(t, hostileTools{perPage: 100, nameLen: 200, pages: 4})
		MustCode(t, localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil), CodeResponseTooLarge)
	})
	t.Run("endless pages", func(t *testing.T) {
		u, calls, _ := MustHostileServer(t, hostileTools{perPage: 1, pages: -1})
		res := localTester().Test(t.Context(), u, Auth{Type: AuthNone}, nil)
		MustCode(t, res, CodeResponseTooLarge)
		if calls.Load() != maxToolPages {
			t.Fatalf("tools/list calls = %d, want %d", calls.Load(), maxToolPages)
		}
	})
}
