package main

import (
	"bytes"
	"context"
	"encoding/json"

	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mcpvault/vault/seal"
)

// benchKey is the API key of the benchmark account on the vaults it starts.
const (
	benchAccount = "bench"
	benchKey     = "sk-vaultbench-0123456789abcdef"
	apiPrefix    = "/api/v1/llm/mcp"
)

// vaultProc is a `bin/vault run` started the way `make run` starts it, with
// its own data dir and free ports.
type vaultProc struct {
	cmd     *exec.Cmd
	dir     string
	URL     string // http://127.0.0.1:port
	NATSURL string // nats://127.0.0.1:port
	logPath string
	exited  chan error
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startVault runs bin/vault with VAULT_NATS_SYNC=sync (and extra
// VAR=value settings) and waits for /readyz.
func startVault(ctx context.Context, bin, dir, sync string, extra ...string) (*vaultProc, error) {
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	natsAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "vault.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, kv := range os.Environ() {
		// VAULT_KEY_POOL* pass through, for A/B runs of the data-key pool.
		if !strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "VAULT_KEY_POOL") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"VAULT_DATA_DIR="+dir,
		"VAULT_HTTP_ADDR="+httpAddr,
		"VAULT_NATS_LISTEN="+natsAddr,
		"VAULT_NATS_SYNC="+sync,
		"VAULT_RATE_LIMIT=0",
		"VAULT_API_KEYS="+benchAccount+":"+benchKey,
		"VAULT_MASTER_KEYS="+seal.NewKeySpec("bench1"),
		"VAULT_AUDIT_KEYS="+benchAuditSpec, // the prefill signs with it too
		"VAULT_LOG_LEVEL=warn",
	)
	env = append(env, extra...)
	cmd := exec.Command(bin, "run")
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	// Its own process group (a Ctrl-C reaches only the bench, which stops
	// the vault cleanly), and a SIGTERM should the bench die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	v := &vaultProc{cmd: cmd, dir: dir, URL: "http://" + httpAddr, NATSURL: "nats://" + natsAddr, logPath: logPath, exited: make(chan error, 1)}
	go func() { v.exited <- cmd.Wait(); logf.Close() }()
	if err := v.waitReady(ctx, 60*time.Second, 0); err != nil {
		v.Stop()
		return nil, err
	}
	// The embedded server refuses anonymous clients: the bench reads the
	// stream as the api user, from the URL vault run wrote.
	b, err := os.ReadFile(filepath.Join(dir, "nats-credentials", "api.url"))
	if err != nil {
		v.Stop()
		return nil, err
	}
	v.NATSURL = strings.TrimSpace(string(b))
	return v, nil
}

// readyz is the part of the /readyz body the bench looks at.
type readyz struct {
	Status string `json:"status"`
	Stream struct {
		StreamSeq uint64 `json:"stream_seq"`
	} `json:"stream"`
	ReadModel struct {
		AppliedSeq uint64 `json:"applied_seq"`
	} `json:"read_model"`
}

// waitReady polls /readyz until it answers 200 and the read model has
// applied at least seq.
func (v *vaultProc) waitReady(ctx context.Context, timeout time.Duration, seq uint64) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-v.exited:
			v.exited <- err
			return fmt.Errorf("vault exited during start-up (%v); log:\n%s", err, v.logTail())
		default:
		}
		// The operator's readiness: the public /readyz carries no figures.
		resp, err := http.Get(v.URL + "/readyz/detail")
		if err == nil {
			var r readyz
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && r.ReadModel.AppliedSeq >= seq {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault not ready within %s (last error %v); log:\n%s", timeout, err, v.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (v *vaultProc) logTail() string {
	b, _ := os.ReadFile(v.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Stop sends SIGTERM (the vault stops its children) and waits.
func (v *vaultProc) Stop() {
	if v == nil || v.cmd.Process == nil {
		return
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.exited:
	case <-time.After(15 * time.Second):
		v.cmd.Process.Kill()
		<-v.exited
	}
}

// client is the benchmark's HTTP client: keep-alive connections for every
// concurrent request.
var client = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        2048,
		MaxIdleConnsPerHost: 2048,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	},
}

// call sends one API request as the bench account on behalf of user and
// checks the status. out, when not nil, receives the JSON answer.
func call(ctx context.Context, base, method, path, user string, body []byte, want int, out any) error {
	return callWith(ctx, base, method, path, user, body, nil, want, out)
}

// callWith is call with extra request headers.
func callWith(ctx context.Context, base, method, path, user string, body []byte, header map[string]string, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+apiPrefix+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+benchKey)
	if user != "" {
		req.Header.Set("X-On-Behalf-Of", user)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		if len(b) > 300 {
			b = b[:300]
		}
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// poolStats returns the data-key pool's counters of a vault (its /metrics
// lines vault_key_pool_*), for the log: how many creates took a stored key.
func poolStats(ctx context.Context, baseURL string) string {
	req, err := http.NewRequestWithContext(ctx, "GET", baseURL+"/metrics", nil)
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+benchKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if name, ok := strings.CutPrefix(line, "vault_key_pool_"); ok {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return fmt.Sprintf("no vault_key_pool_* series (HTTP %d)", resp.StatusCode)
	}
	return strings.Join(out, ", ")
}
