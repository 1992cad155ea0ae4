package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/httpapi"
	"github.com/mcpvault/vault/projections"
)

// readFixture is a read model holding one server of u1 with 100
// credentials, and the API's routes over it (no stream: the barrier waits
// for nothing). It returns the handler, the server and its newest credential.
func readFixture(tb testing.TB) (http.Handler, string, string) {
	ctx := context.Background()
	path := filepath.Join(tb.TempDir(), "rm.sqlite")
	w, err := projections.Open(ctx, path, projections.Writer)
	if err != nil {
		tb.Fatal(err)
	}
	owner := events.Owner{Account: "acct", User: "u1"}
	srv := "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d01"
	at := events.NewTime(time.Now())
	sealed := &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte("nonce-012345"), Ciphertext: []byte("ciphertext-bytes-0123456789")}
	recs := []events.Record{{Meta: events.Meta{ID: "e0", AggregateID: srv, ServerID: srv, Owner: owner, OccurredAt: at},
		Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{Name: "n", ServerLabel: "l", ServerURL: "https://example.com/mcp",
			RequireApproval: "always", Metadata: map[string]string{}}}, Sequence: 1}}
	var cred string
	for i := range 100 {
		cred = fmt.Sprintf("mcp_cred_0196a1b2c3d4e5f60718293a4b5c%04x", i)
		name, prev := "token", "****...wxyz"
		recs = append(recs, events.Record{Meta: events.Meta{ID: fmt.Sprintf("e%d", i+1), AggregateID: cred, ServerID: srv, Owner: owner, OccurredAt: at},
			Event:    events.CredentialCreated{Name: &name, AuthType: "bearer", AuthorizationPreview: &prev, HeaderNames: []string{}, Secret: sealed},
			Sequence: uint64(i + 2)})
	}
	msgs := make([]projections.Msg, len(recs))
	for i, r := range recs {
		body, err := events.Marshal(r.Meta, r.Event)
		if err != nil {
			tb.Fatal(err)
		}
		msgs[i] = projections.Decode(r.Sequence, events.SubjectOf(r), body)
	}
	if _, err := w.Apply(ctx, msgs); err != nil {
		tb.Fatal(err)
	}
	w.Close()
	db, err := projections.Open(ctx, path, projections.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := (&httpapi.Handler{Vault: &app.Vault{DB: db, Log: log}, Log: log,
		Keys: []httpapi.APIKey{{Account: "acct", Key: "sk-bench-0123456789"}}}).Routes()
	return h, srv, cred
}

// A get and a list page go out whole, with their Content-Length (not
// chunked: a page of 20 is over net/http's 2 KiB chunking threshold), as
// valid JSON.
func TestReadsAnswerWithContentLength(t *testing.T) {
	h, srv, cred := readFixture(t)
	ts := httptest.NewServer(h)
	defer ts.Close()
	get := func(path string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer sk-bench-0123456789")
		req.Header.Set("X-On-Behalf-Of", "u1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	for _, path := range []string{"/api/v1/llm/mcp/servers/" + srv + "/credentials/" + cred, "/api/v1/llm/mcp/servers/" + srv + "/credentials"} {
		resp, body, err := get(path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		if resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) > 0 {
			t.Fatalf("%s: Content-Length %d, body %d bytes, transfer encoding %v", path, resp.ContentLength, len(body), resp.TransferEncoding)
		}
		if !json.Valid(body) {
			t.Fatalf("%s: not JSON: %.100s", path, body)
		}
	}
	// List answers are built in pooled buffers: pages of different sizes
	// requested concurrently each get their own bytes.
	body := func(path string) []byte {
		_, b, err := get(path)
		if err != nil {
			t.Error(err)
		}
		return b
	}
	paths := []string{"/api/v1/llm/mcp/servers/" + srv + "/credentials", "/api/v1/llm/mcp/servers/" + srv + "/credentials?limit=3&order=asc"}
	want := [][]byte{body(paths[0]), body(paths[1])}
	if bytes.Equal(want[0], want[1]) || !json.Valid(want[1]) {
		t.Fatalf("pages of 20 and of 3 answered %.80s and %.80s", want[0], want[1])
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				k := (w + i) % 2
				if got := body(paths[k]); !bytes.Equal(got, want[k]) {
					t.Errorf("%s answered %.120s, want %.120s", paths[k], got, want[k])
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkReadHandlers serves a get and a list page (20 of 100
// credentials) through the real Gin routes and a real read model, without
// the network and without a stream (the barrier then waits for nothing):
// what a read costs in the API process itself.
func BenchmarkReadHandlers(b *testing.B) {
	h, srv, cred := readFixture(b)
	for _, c := range []struct{ name, path string }{
		{"get", "/api/v1/llm/mcp/servers/" + srv + "/credentials/" + cred},
		{"list20", "/api/v1/llm/mcp/servers/" + srv + "/credentials"},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, c.path, nil)
			req.Header.Set("Authorization", "Bearer sk-bench-0123456789")
			req.Header.Set("X-On-Behalf-Of", "u1")
			b.ReportAllocs()
			for b.Loop() {
				rr := httptest.NewRecorder()
				h.ServeHTTP(rr, req)
				if rr.Code != http.StatusOK {
					b.Fatalf("%d %s", rr.Code, rr.Body)
				}
			}
		})
	}
}
