// Command mcpserver is a tiny MCP server (Streamable HTTP) for trying the
// vault's testServer locally. It demands `Authorization: Bearer $TOKEN`
// (default "demo-token-1234") and offers two tools.
//
//	go run ./examples/mcpserver            # listens on 127.0.0.1:9090, path /mcp
package main

import (
	"context"
	"crypto/subtle"
	"flag"
	"log"
	"net/http"
	"os"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type issueArgs struct {
	Team string `json:"team,omitempty"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	flag.Parse()
	token := os.Getenv("TOKEN")
	if token == "" {
		token = "demo-token-1234"
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "demo", Version: "1.0.0"}, nil)
	for _, name := range []string{"issues.list", "issues.create"} {
		mcp.AddTool(s, &mcp.Tool{Name: name, Description: "demo tool " + name},
			func(ctx context.Context, req *mcp.CallToolRequest, in issueArgs) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil, nil
			})
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	want := []byte("Bearer " + token)
	http.Handle("/mcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	log.Printf("demo MCP server on http://%s/mcp (token from $TOKEN)", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
