// Package vaulttest starts the real vault — an in-process NATS JetStream
// server on a random port with its store in a temp dir, the real projector
// and the real API on :0 with a real SQLite file — for end-to-end tests.
package vaulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/httpapi"
	"github.com/mcpvault/vault/internal/natsserver"
	"github.com/mcpvault/vault/mcpproxy"
	"github.com/mcpvault/vault/seal"
	"github.com/mcpvault/vault/service"
)

// Accounts and keys every Env accepts.
const (
	KeyA = "sk-test-account-a-0123456789"
	KeyB = "sk-test-account-b-0123456789"
)

// Options change how an Env starts.
type Options struct {
	Stream       string
	AllowPrivate bool
	Tester       app.Tester
	RateLimit    float64
	SyncAlways   bool
	// GroupCommit turns on group commit (off by default, as under make run).
	GroupCommit bool
	// KeyPool and KeyPoolMaxAge are service.API's (0: the defaults; a
	// negative KeyPool turns the data-key pool off).
	KeyPool       int
	KeyPoolMaxAge time.Duration
	KeyPoolAtomic bool
	// KeyPoolColdPairs keeps the production rule (pairs pooled only once
	// creates follow each other closely); by default tests pool every pair
	// from its first create.
	KeyPoolColdPairs bool
	Now              func() time.Time
	// APINATS, when set, is given the NATS server's host:port on every
	// StartAPI and returns the host:port the API dials instead (a
	// faultnet proxy in between, for tests that lose the stream's answers).
	APINATS func(natsAddr string) string
	// VerifyAudit makes the projector and the API's loader verify every
	// event's audit signature (as bin/projector and bin/api do); off by
	// default because many tests publish raw, unsigned events to the stream
	// (the API still signs what it appends).
	VerifyAudit bool
	MCP         mcpproxy.Options // the MCP endpoint's limits (zero: defaults)
	// SeparateMetrics serves /metrics and the detailed /readyz on their own
	// address (VAULT_METRICS_ADDR), Env.MetricsURL.
	SeparateMetrics bool
	// Timeouts and MaxHeaderBytes of the API's HTTP server (zero = defaults).
	Timeouts       service.HTTPTimeouts
	MaxHeaderBytes int
	// Limits are the operator caps (zero = off).
	Limits app.Limits
}

// Env is one running vault.
type Env struct {
	TB  testing.TB
	URL string // http://127.0.0.1:port
	// MetricsURL is the metrics address (Options.SeparateMetrics), else "".
	MetricsURL string
	Dir        string
	StoreDir   string
	ReadModel  string
	Stream     string
	Keyring    *seal.Keyring
	// KeySpec is Keyring as VAULT_MASTER_KEYS spells it (first key active).
	KeySpec string
	// AuditSpec is the audit signing keyring (VAULT_AUDIT_KEYS form) the
	// API signs events with; AuditKeys is it parsed.
	AuditSpec string
	AuditKeys *audit.Keyring
	Logs      *SyncBuffer

	opts     Options
	nats     *server.Server
	natsAddr string
	// passwords of the NATS users api, projector, audit and admin.
	passwords map[string]string
	mu        sync.Mutex
	api       *proc
	proj      *proc
}

type proc struct {
	cancel context.CancelFunc
	done   chan error
}

func (p *proc) stop() error {
	p.cancel()
	return <-p.done
}

// SyncBuffer is a goroutine-safe log sink.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// MustStart starts NATS, the projector and the API; all stop at test cleanup.
func MustStart(tb testing.TB, opts Options) *Env {
	tb.Helper()
	if opts.Stream == "" {
		opts.Stream = "VAULT"
	}
	dir := tb.TempDir()
	spec := seal.NewKeySpec("k1")
	kr, err := seal.ParseKeyring(spec)
	if err != nil {
		tb.Fatal(err)
	}
	e := &Env{TB: tb, Dir: dir, StoreDir: filepath.Join(dir, "jetstream"), ReadModel: filepath.Join(dir, "readmodel.sqlite"),
		Stream: opts.Stream, Keyring: kr, KeySpec: spec, Logs: &SyncBuffer{}, opts: opts, natsAddr: "127.0.0.1:0",
		passwords: map[string]string{"api": natsserver.NewPassword(), "projector": natsserver.NewPassword(),
			"audit": natsserver.NewPassword(), "admin": natsserver.NewPassword()}}
	e.AuditSpec = audit.NewKeySpec("audit1")
	if e.AuditKeys, err = audit.ParseKeyring(e.AuditSpec); err != nil {
		tb.Fatal(err)
	}
	e.StartNATS()
	e.StartProjector()
	e.StartAPI()
	tb.Cleanup(e.StopAll)
	return e
}

// StartNATS starts (or restarts, on the same port and store) the NATS server,
// configured like the embedded server of `vault run`: users api, projector
// and audit with their permissions, anonymous clients refused; plus a user
// admin with every permission for tests that inspect the raw streams.
func (e *Env) StartNATS() {
	e.TB.Helper()
	s, err := natsserver.Start(natsserver.Options{Listen: e.natsAddr, StoreDir: e.StoreDir, SyncAlways: e.opts.SyncAlways,
		Stream: e.Stream, Passwords: e.passwords, AdminPassword: e.passwords["admin"]})
	if err != nil {
		e.TB.Fatal(err)
	}
	e.nats = s
	e.natsAddr = s.Addr().String()
}

// StopNATS shuts the NATS server down.
func (e *Env) StopNATS() {
	if e.nats != nil {
		e.nats.Shutdown()
		e.nats.WaitForShutdown()
		e.nats = nil
	}
}

// NATSURL is the client URL of the NATS server as the admin user (every
// permission), for tests that read the streams exactly as stored.
func (e *Env) NATSURL() string { return e.NATSURLAs("admin") }

// NATSURLAs is the client URL of the NATS server as user (api, projector,
// audit or admin); "" is the anonymous URL, which the server refuses.
func (e *Env) NATSURLAs(user string) string {
	if user == "" {
		return "nats://" + e.natsAddr
	}
	return natsserver.URL(e.natsAddr, user, e.passwords[user])
}

// Logger returns a logger writing into e.Logs.
func (e *Env) Logger(process string) *slog.Logger {
	return slog.New(slog.NewTextHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("process", process)
}

// StartProjector starts the projector process code.
func (e *Env) StartProjector() {
	p := &service.Projector{NATSURL: e.NATSURLAs("projector"), Stream: e.Stream, ReadModelPath: e.ReadModel, Log: e.Logger("projector")}
	if e.opts.VerifyAudit {
		p.AuditKeys = e.AuditKeys
	}
	e.proj = start(p.Run)
}

// StopProjector stops the projector.
func (e *Env) StopProjector() {
	if e.proj != nil {
		if err := e.proj.stop(); err != nil {
			e.TB.Errorf("projector: %v", err)
		}
		e.proj = nil
	}
}

// StartAPI starts the API process code on a fresh port (the URL changes
// only on the first start: later starts reuse the port).
func (e *Env) StartAPI() {
	e.TB.Helper()
	addr := "127.0.0.1:0"
	if e.URL != "" {
		addr = strings.TrimPrefix(e.URL, "http://")
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		e.TB.Fatal(err)
	}
	e.URL = "http://" + ln.Addr().String()
	var metricsLn net.Listener
	if e.opts.SeparateMetrics {
		maddr := "127.0.0.1:0"
		if e.MetricsURL != "" {
			maddr = strings.TrimPrefix(e.MetricsURL, "http://")
		}
		for i := 0; i < 50; i++ {
			if metricsLn, err = net.Listen("tcp", maddr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			e.TB.Fatal(err)
		}
		e.MetricsURL = "http://" + metricsLn.Addr().String()
	}
	natsURL := e.NATSURLAs("api")
	if e.opts.APINATS != nil {
		natsURL = natsserver.URL(e.opts.APINATS(e.natsAddr), "api", e.passwords["api"])
	}
	a := &service.API{Listener: ln, NATSURL: natsURL, Stream: e.Stream, ReadModelPath: e.ReadModel,
		Keys:       []httpapi.APIKey{{Account: "acct_a", Key: KeyA}, {Account: "acct_b", Key: KeyB}},
		MasterKeys: e.Keyring, AuditKeys: e.AuditKeys, UnsignedUntil: e.unsignedUntil(), AllowPrivate: e.opts.AllowPrivate, RateLimit: e.opts.RateLimit,
		GroupCommit: e.opts.GroupCommit, KeyPool: e.opts.KeyPool, KeyPoolMaxAge: e.opts.KeyPoolMaxAge, KeyPoolAtomic: e.opts.KeyPoolAtomic, KeyPoolHotGap: testHotGap(e.opts.KeyPoolColdPairs),
		Log: e.Logger("api"), Tester: e.opts.Tester, Now: e.opts.Now, MCP: e.opts.MCP,
		MetricsListener: metricsLn, Timeouts: e.opts.Timeouts, MaxHeaderBytes: e.opts.MaxHeaderBytes, Limits: e.opts.Limits}
	e.api = start(a.Run)
	e.WaitReady()
}

// StopAPI stops the API.
func (e *Env) StopAPI() {
	// A connection the client dialled but never used is "new" to the server,
	// and http.Server.Shutdown waits 5 s before treating it as idle.
	client.CloseIdleConnections()
	if e.api != nil {
		if err := e.api.stop(); err != nil {
			e.TB.Errorf("api: %v", err)
		}
		e.api = nil
	}
}

// StopAll stops everything (idempotent).
func (e *Env) StopAll() {
	e.StopAPI()
	e.StopProjector()
	e.StopNATS()
}

func start(run func(context.Context) error) *proc {
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- run(ctx) }()
	return p
}

// WaitReady waits until /readyz answers 200.
func (e *Env) WaitReady() {
	e.TB.Helper()
	Eventually(e.TB, 20*time.Second, func() bool {
		resp, err := http.Get(e.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Response is an HTTP answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic map (fails the test otherwise).
func (r Response) JSON(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		tb.Fatalf("body is not a JSON object: %v: %s", err, r.Body)
	}
	return m
}

// Request is one call to the API.
type Request struct {
	Method string
	Path   string // under /api/v1/llm/mcp unless it starts with "/"+"healthz" etc.
	Body   any    // string/[]byte sent raw; anything else JSON-encoded; nil = no body
	Key    string // API key; "" = KeyA; "-" = no Authorization header
	User   string // X-On-Behalf-Of; "" = none
	Header map[string]string
}

var client = &http.Client{Timeout: 30 * time.Second}

// Body encodes a request body: nil = none, string/[]byte sent raw,
// anything else JSON-encoded.
func Body(tb testing.TB, v any) io.Reader {
	tb.Helper()
	switch b := v.(type) {
	case nil:
		return nil
	case string:
		return strings.NewReader(b)
	case []byte:
		return bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		return bytes.NewReader(raw)
	}
}

// MustJetStream returns a plain JetStream client on url (closed at cleanup)
// that keeps reconnecting, for tests that read the stream exactly as stored.
func MustJetStream(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// Do sends r and returns the answer, after checking that the answer is one
// the OpenAPI document (openapi/openapi.json) allows: a mismatch fails tb.
func (e *Env) Do(tb testing.TB, r Request) Response {
	tb.Helper()
	return DoAt(tb, e.URL, r)
}

// DoAt sends r to the API at baseURL (http://host:port) and returns the
// answer; a transport error fails the test.
func DoAt(tb testing.TB, baseURL string, r Request) Response {
	tb.Helper()
	resp, err := Send(context.Background(), tb, baseURL, r)
	if err != nil {
		tb.Fatalf("%s %s: %v", r.Method, r.Path, err)
	}
	return resp
}

// Send sends r to the API at baseURL under ctx and returns the answer or
// the transport error: a client that hangs up cancels ctx, which closes its
// connection.
func Send(ctx context.Context, tb testing.TB, baseURL string, r Request) (Response, error) {
	tb.Helper()
	var sent []byte
	if b := Body(tb, r.Body); b != nil {
		var err error
		if sent, err = io.ReadAll(b); err != nil {
			tb.Fatal(err)
		}
	}
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(sent)
	}
	url := baseURL + "/api/v1/llm/mcp" + r.Path
	if strings.HasPrefix(r.Path, "!") {
		url = baseURL + r.Path[1:]
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, url, body)
	if err != nil {
		tb.Fatal(err)
	}
	if r.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch r.Key {
	case "":
		req.Header.Set("Authorization", "Bearer "+KeyA)
	case "-":
	default:
		req.Header.Set("Authorization", "Bearer "+r.Key)
	}
	if r.User != "" {
		req.Header.Set("X-On-Behalf-Of", r.User)
	}
	for k, v := range r.Header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, err
	}
	// Every answer must be one the OpenAPI document allows, and a request
	// the API accepted must be one the document accepts.
	CheckContract(tb, req, resp.StatusCode, resp.Header, raw)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		CheckAcceptedRequest(tb, req, sent)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

// MustCreateServer creates a server for user (of account A) and returns its id.
func (e *Env) MustCreateServer(tb testing.TB, user string, body map[string]any) string {
	tb.Helper()
	if body == nil {
		body = map[string]any{"name": "Linear", "server_label": "linear", "server_url": "https://mcp.linear.app/mcp"}
	}
	r := e.Do(tb, Request{Method: "POST", Path: "/servers", Body: body, User: user})
	if r.Status != http.StatusCreated {
		tb.Fatalf("create server: %d %s", r.Status, r.Body)
	}
	return r.JSON(tb)["id"].(string)
}

// MustCreateCredential creates a credential and returns its JSON.
func (e *Env) MustCreateCredential(tb testing.TB, user, serverID string, body map[string]any) map[string]any {
	tb.Helper()
	r := e.Do(tb, Request{Method: "POST", Path: "/servers/" + serverID + "/credentials", Body: body, User: user})
	if r.Status != http.StatusCreated {
		tb.Fatalf("create credential: %d %s", r.Status, r.Body)
	}
	return r.JSON(tb)
}

// unsignedUntil is what the API accepts unsigned: everything unless the
// test verifies.
func (e *Env) unsignedUntil() uint64 {
	if e.opts.VerifyAudit {
		return 0
	}
	return math.MaxUint64
}

func testHotGap(cold bool) time.Duration {
	if cold {
		return 0
	}
	return -1
}
