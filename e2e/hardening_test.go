package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/service"
)

// hdScrape returns the body of GET url+"/metrics".
func hdScrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, raw)
	}
	return string(raw)
}

// hdSeries returns the distinct label sets of metric name in a scrape.
func hdSeries(scrape, name string) []string {
	var out []string
	for _, line := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(line, name+"{") {
			out = append(out, line[:strings.LastIndexByte(line, ' ')])
		}
	}
	return out
}

// TestMetricsLabelsAreBounded: made-up methods and paths from anonymous
// clients do not create series; labels are a method from a fixed set, a
// route template and a status class.
func TestMetricsLabelsAreBounded(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{RateLimit: 0})
	srv := env.MustCreateServer(t, "", nil)
	env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv})
	before := len(hdSeries(hdScrape(t, env.URL), "vault_http_requests_total"))
	for i := range 300 {
		m := fmt.Sprintf("M%dX", i)
		r := env.Do(t, vaulttest.Request{Method: m, Path: fmt.Sprintf("/servers/%s/x%d", srv, i), Key: "-"})
		if r.Status != http.StatusNotFound {
			t.Fatalf("%s: %d", m, r.Status)
		}
		env.Do(t, vaulttest.Request{Method: "GET", Path: fmt.Sprintf("!/unknown/%d", i), Key: "-"})
	}
	scrape := hdScrape(t, env.URL)
	series := hdSeries(scrape, "vault_http_requests_total")
	if len(series) > before+3 {
		t.Fatalf("300 made-up methods and paths added %d series (want at most 3):\n%s", len(series)-before, strings.Join(series, "\n"))
	}
	if strings.Contains(scrape, "M17X") || strings.Contains(scrape, "/unknown/") || strings.Contains(scrape, srv) {
		t.Fatal("a raw method, path or id became a label")
	}
	want := `vault_http_requests_total{method="OTHER",route="unmatched",status="4xx"}`
	if !strings.Contains(scrape, want) {
		t.Fatalf("no %s in\n%s", want, strings.Join(series, "\n"))
	}
	if !strings.Contains(scrape, `vault_http_request_duration_seconds_count{method="GET",route="/api/v1/llm/mcp/servers/:server_id"}`) {
		t.Fatal("no request latency by route template")
	}
	label := regexp.MustCompile(`method="([^"]*)",route="([^"]*)",status="([^"]*)"`)
	for _, s := range series {
		m := label.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("unexpected series %s", s)
		}
		if !regexp.MustCompile(`^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|OTHER)$`).MatchString(m[1]) ||
			!regexp.MustCompile(`^(unmatched|/[a-z0-9_/:.]*)$`).MatchString(m[2]) ||
			!regexp.MustCompile(`^([1-5]xx|other)$`).MatchString(m[3]) {
			t.Fatalf("unbounded label in %s", s)
		}
	}
}

// hdNumbers returns the paths of every number in a JSON document.
func hdNumbers(v any, path string) []string {
	var out []string
	switch t := v.(type) {
	case float64:
		out = append(out, path)
	case map[string]any:
		for k, x := range t {
			out = append(out, hdNumbers(x, path+"."+k)...)
		}
	case []any:
		for i, x := range t {
			out = append(out, hdNumbers(x, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}

// TestReadinessFiguresOnlyForTheOperator: the public /readyz says ready or
// not and why, without counts or sequence numbers; the figures are on the
// metrics address (VAULT_METRICS_ADDR), which also alone serves /metrics.
func TestReadinessFiguresOnlyForTheOperator(t *testing.T) {
	t.Run("same address", func(t *testing.T) {
		env := vaulttest.MustStart(t, vaulttest.Options{})
		env.MustCreateServer(t, "", nil)
		r := env.Do(t, vaulttest.Request{Method: "GET", Path: "!/readyz", Key: "-"})
		if r.Status != http.StatusOK || len(hdNumbers(r.JSON(t), "")) != 0 {
			t.Fatalf("public /readyz: %d %s", r.Status, r.Body)
		}
		d := env.Do(t, vaulttest.Request{Method: "GET", Path: "!/readyz/detail", Key: "-"})
		if d.Status != http.StatusOK || len(hdNumbers(d.JSON(t), "")) == 0 {
			t.Fatalf("/readyz/detail has no figures: %d %s", d.Status, d.Body)
		}
	})
	t.Run("separate metrics address", func(t *testing.T) {
		env := vaulttest.MustStart(t, vaulttest.Options{SeparateMetrics: true})
		env.MustCreateServer(t, "", nil)
		for _, p := range []string{"!/metrics", "!/readyz/detail"} {
			if r := env.Do(t, vaulttest.Request{Method: "GET", Path: p, Key: "-"}); r.Status != http.StatusNotFound {
				t.Fatalf("%s on the API address: %d", p, r.Status)
			}
		}
		r := env.Do(t, vaulttest.Request{Method: "GET", Path: "!/readyz", Key: "-"})
		if r.Status != http.StatusOK || len(hdNumbers(r.JSON(t), "")) != 0 {
			t.Fatalf("public /readyz: %d %s", r.Status, r.Body)
		}
		resp, err := http.Get(env.MetricsURL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var detail map[string]any
		json.NewDecoder(resp.Body).Decode(&detail)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(hdNumbers(detail, "")) == 0 {
			t.Fatalf("metrics /readyz: %d %v", resp.StatusCode, detail)
		}
		scrape := hdScrape(t, env.MetricsURL)
		for _, name := range []string{"vault_http_requests_total", "vault_stream_last_sequence", "vault_readmodel_applied_sequence",
			"vault_projector_lag_events", "vault_publish_duration_seconds", "vault_projector_pending_key_destructions", "vault_projector_held_aggregates",
			"vault_idempotency_replays_total", "go_goroutines"} {
			if !strings.Contains(scrape, "\n"+name) && !strings.Contains(scrape, "# HELP "+name+" ") {
				t.Errorf("no %s on the metrics address", name)
			}
		}
	})
}

// TestIdempotencyReplaysAreCounted: a replayed answer shows in
// vault_idempotency_replays_total.
func TestIdempotencyReplaysAreCounted(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	body := map[string]any{"name": "Linear", "server_label": "linear", "server_url": "https://mcp.linear.app/mcp"}
	for range 3 {
		r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", Body: body, Header: map[string]string{"Idempotency-Key": "k-1"}})
		if r.Status != http.StatusCreated {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	if !strings.Contains(hdScrape(t, env.URL), "vault_idempotency_replays_total 2\n") {
		t.Fatal("two replays not counted")
	}
}

// TestIdempotencyKeyLengthInCharacters: the 255 limit counts characters, not
// bytes (API.md).
func TestIdempotencyKeyLengthInCharacters(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	body := map[string]any{"name": "Linear", "server_label": "linear", "server_url": "https://mcp.linear.app/mcp"}
	for _, c := range []struct {
		key  string
		want int
	}{
		{strings.Repeat("é", 200), http.StatusCreated}, // 400 bytes, 200 characters
		{strings.Repeat("é", 255), http.StatusCreated},
		{strings.Repeat("a", 255), http.StatusCreated},
		{strings.Repeat("é", 256), http.StatusBadRequest},
		{strings.Repeat("a", 256), http.StatusBadRequest},
	} {
		r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", Body: body, Header: map[string]string{"Idempotency-Key": c.key}})
		if r.Status != c.want {
			t.Fatalf("key of %d characters (%d bytes): %d %s, want %d", len([]rune(c.key)), len(c.key), r.Status, r.Body, c.want)
		}
	}
}

// TestMalformedPathIDIsNotFound: a path ID without the right shape is a 404
// even when the query or body is also invalid.
func TestMalformedPathIDIsNotFound(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	srv := env.MustCreateServer(t, "", nil)
	for _, r := range []vaulttest.Request{
		{Method: "GET", Path: "/servers/bogus/credentials?limit=0"},
		{Method: "GET", Path: "/servers/bogus/credentials?order=sideways&include_revoked=maybe"},
		{Method: "POST", Path: "/servers/bogus/test", Body: map[string]any{"x": 1}},
		{Method: "POST", Path: "/servers/bogus/test", Body: "{not json"},
		{Method: "POST", Path: "/servers/bogus", Body: map[string]any{"name": 5}},
		{Method: "POST", Path: "/servers/bogus/credentials", Body: map[string]any{"auth_type": "kerberos"}},
		{Method: "POST", Path: "/servers/" + srv + "/credentials/bogus/revoke", Body: map[string]any{"x": 1}},
		{Method: "POST", Path: "/servers/bogus/credentials/bogus/revoke", Body: "[]", Header: map[string]string{"Idempotency-Key": "k"}},
		{Method: "GET", Path: "/servers/" + strings.ToUpper(srv) + "/credentials?limit=500"},
		{Method: "DELETE", Path: "/servers/" + srv + "/credentials/mcp_cred_XYZ"},
	} {
		got := env.Do(t, r)
		if got.Status != http.StatusNotFound {
			t.Errorf("%s %s: %d %s, want 404", r.Method, r.Path, got.Status, got.Body)
		}
	}
	// A well-formed ID with an invalid query is still a 400 naming the parameter.
	got := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv + "/credentials?limit=0"})
	if got.Status != http.StatusBadRequest {
		t.Fatalf("limit=0 on a real server: %d", got.Status)
	}
	// Authentication still comes first.
	if got := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/bogus", Key: "-"}); got.Status != http.StatusUnauthorized {
		t.Fatalf("no key: %d", got.Status)
	}
}

// TestHeadersCredentialRefusesTransportHeaders: a headers credential may not
// replace the MCP transport's own headers (API.md).
func TestHeadersCredentialRefusesTransportHeaders(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	srv := env.MustCreateServer(t, "", nil)
	for _, name := range []string{"Content-Type", "accept", "Mcp-Session-Id", "MCP-PROTOCOL-VERSION", "Last-Event-ID"} {
		r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/credentials",
			Body: map[string]any{"headers": map[string]string{"X-Api-Key": "k", name: "v"}}})
		if r.Status != http.StatusBadRequest || r.JSON(t)["error"].(map[string]any)["param"] != "headers" {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	list := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv + "/credentials"})
	if n := len(list.JSON(t)["data"].([]any)); n != 0 {
		t.Fatalf("%d credentials stored", n)
	}
}

// hdPanicTester panics inside testServer, holding the decrypted secret.
type hdPanicTester struct{}

func (hdPanicTester) Test(_ context.Context, _ string, _ domain.Credential, s domain.Secret, _ []string) app.TestResult {
	panic(fmt.Sprintf("boom-panic-marker (secret length %d)", len(s.BearerToken)))
}

// TestPanicIsLoggedWithValueAndStack: a panic is a JSON 500, and the log has
// the panic value and the stack, but not the request's headers or body.
func TestPanicIsLoggedWithValueAndStack(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{Tester: hdPanicTester{}})
	srv := env.MustCreateServer(t, "user-panic-1", nil)
	const secret = "SECRET-panic-canary-0123456789"
	env.MustCreateCredential(t, "user-panic-1", srv, map[string]any{"bearer_token": secret})
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/test", User: "user-panic-1",
		Body: map[string]any{}, Header: map[string]string{"X-Extra-Canary": "HEADER-canary-42"}})
	if r.Status != http.StatusInternalServerError || r.JSON(t)["error"].(map[string]any)["type"] != "api_error" {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	logs := env.Logs.String()
	if !strings.Contains(logs, "boom-panic-marker") {
		t.Fatalf("panic value not logged:\n%s", logs)
	}
	if !strings.Contains(logs, "hdPanicTester.Test") || !strings.Contains(logs, "goroutine") {
		t.Fatal("stack not logged")
	}
	for _, canary := range []string{secret, vaulttest.KeyA, "HEADER-canary-42", "user-panic-1"} {
		if strings.Contains(logs, canary) {
			t.Fatalf("the log holds %q", canary)
		}
	}
}

// TestSlowClientsAreCut: a client dribbling its headers or its body, or
// idling on a kept-alive connection, is disconnected after the timeouts.
func TestSlowClientsAreCut(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{Timeouts: serviceTimeouts(time.Second)})
	addr := strings.TrimPrefix(env.URL, "http://")
	dribble := func(t *testing.T, head string, then string) time.Duration {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, conn) // returns when the server closes
			close(closed)
		}()
		for i := 0; ; i++ {
			select {
			case <-closed:
				return time.Since(start)
			case <-time.After(100 * time.Millisecond):
			}
			if time.Since(start) > 10*time.Second {
				t.Fatal("slow client still connected after 10 s")
			}
			conn.Write([]byte{then[i%len(then)]})
		}
	}
	t.Run("headers", func(t *testing.T) {
		d := dribble(t, "GET /healthz HTTP/1.1\r\nHost: x\r\n", "X-Slow: aaaaaaaa")
		if d > 3*time.Second {
			t.Fatalf("cut after %s", d)
		}
	})
	t.Run("body", func(t *testing.T) {
		d := dribble(t, "POST /api/v1/llm/mcp/servers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+vaulttest.KeyA+
			"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", `{"name":"aaaa`)
		if d > 4*time.Second {
			t.Fatalf("cut after %s", d)
		}
	})
	t.Run("idle", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		raw, err := io.ReadAll(conn) // the answer, then EOF when the idle connection is closed
		if err != nil || !strings.Contains(string(raw), "200 OK") || time.Since(start) > 4*time.Second {
			t.Fatalf("idle connection: %v after %s: %q", err, time.Since(start), raw)
		}
	})
}

// TestRequestHeadersAreBounded: headers beyond the bound are refused with 431
// before any handler runs.
func TestRequestHeadersAreBounded(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{MaxHeaderBytes: 8 << 10})
	req, _ := http.NewRequest("GET", env.URL+"/api/v1/llm/mcp/servers", nil)
	req.Header.Set("Authorization", "Bearer "+vaulttest.KeyA)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB header: %d", resp.StatusCode)
	}
	// Ordinary requests still pass.
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers", Header: map[string]string{"X-Ok": strings.Repeat("a", 2<<10)}}); r.Status != http.StatusOK {
		t.Fatalf("2 KiB header: %d", r.Status)
	}
}

// serviceTimeouts are short HTTP server timeouts for the slow-client tests.
func serviceTimeouts(d time.Duration) service.HTTPTimeouts {
	return service.HTTPTimeouts{ReadHeader: d, Read: 2 * d, Write: 5 * d, Idle: d}
}

// hdGauge reads one unlabelled sample from a scrape.
func hdGauge(t *testing.T, scrape, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` ([0-9.e+-]+)$`).FindStringSubmatch(scrape)
	if m == nil {
		t.Fatalf("no %s in the scrape", name)
	}
	var v float64
	fmt.Sscan(m[1], &v)
	return v
}

// TestProjectorLagMetrics: with the projector stopped, the lag in events and
// in seconds grows; once it runs again both go back to zero.
func TestProjectorLagMetrics(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{SeparateMetrics: true})
	env.MustCreateServer(t, "", nil)
	vaulttest.Eventually(t, 10*time.Second, func() bool {
		return hdGauge(t, hdScrape(t, env.MetricsURL), "vault_projector_lag_events") == 0
	})
	env.StopProjector()
	env.MustCreateServer(t, "", nil)
	env.MustCreateServer(t, "", nil)
	time.Sleep(1100 * time.Millisecond)
	scrape := hdScrape(t, env.MetricsURL)
	if n := hdGauge(t, scrape, "vault_projector_lag_events"); n != 2 {
		t.Log(regexp.MustCompile(`(?m)^vault_(stream|readmodel|projector).*$`).FindAllString(scrape, -1))
		t.Fatalf("lag %v events, want 2", n)
	}
	if s := hdGauge(t, scrape, "vault_projector_lag_seconds"); s < 1 || s > 30 {
		t.Fatalf("lag %v seconds, want about 1", s)
	}
	if hdGauge(t, scrape, "vault_stream_last_sequence")-hdGauge(t, scrape, "vault_readmodel_applied_sequence") != 2 {
		t.Fatal("sequences do not show the lag")
	}
	env.StartProjector()
	vaulttest.Eventually(t, 10*time.Second, func() bool {
		s := hdScrape(t, env.MetricsURL)
		return hdGauge(t, s, "vault_projector_lag_events") == 0 && hdGauge(t, s, "vault_projector_lag_seconds") == 0
	})
}
