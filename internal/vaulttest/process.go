package vaulttest

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpvault/vault/seal"

	"github.com/mcpvault/vault/internal/natsserver"
)

// RotateMasterKey makes a fresh key with id kid the active master key and
// keeps the current ones for decryption (VAULT_MASTER_KEYS "kid:new,old…"),
// as an operator's rotation does. It takes effect on the next StartAPI.
func (e *Env) RotateMasterKey(kid string) {
	e.TB.Helper()
	spec := seal.NewKeySpec(kid) + "," + e.KeySpec
	kr, err := seal.ParseKeyring(spec)
	if err != nil {
		e.TB.Fatal(err)
	}
	e.KeySpec, e.Keyring = spec, kr
}

// SetDedupWindow changes the event stream's Nats-Msg-Id deduplication
// window (its Duplicates setting) on the running NATS server, as an
// operator could. It holds until a vault process opens the stream again
// (opening sets the configured window).
func (e *Env) SetDedupWindow(d time.Duration) {
	e.TB.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js := MustJetStream(e.TB, e.NATSURL())
	s, err := js.Stream(ctx, e.Stream)
	if err != nil {
		e.TB.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.TB.Fatal(err)
	}
	cfg := info.Config
	cfg.Duplicates = d
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		e.TB.Fatalf("setting the deduplication window to %s: %v", d, err)
	}
}

var moduleRoot struct {
	once sync.Once
	dir  string
	err  error
}

// ModuleRoot is the directory of the vault's go.mod.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	moduleRoot.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if err == nil && (gomod == "" || gomod == os.DevNull) {
			err = os.ErrNotExist
		}
		moduleRoot.dir, moduleRoot.err = filepath.Dir(gomod), err
	})
	if moduleRoot.err != nil {
		tb.Fatalf("go env GOMOD: %v", moduleRoot.err)
	}
	return moduleRoot.dir
}

// Build compiles the command package pkg (e.g. "./cmd/api") into a temp dir
// and returns the binary's path.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = ModuleRoot(tb)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// APIProcess is the API binary (cmd/api) running as a child process against
// an Env's NATS server and read model: a second API replica that a test can
// kill for real.
type APIProcess struct {
	URL  string
	Logs *SyncBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// SpawnAPI starts the API binary bin listening on addr (host:port) with the
// Env's stream, read model, API keys, master keys and Options.APINATS, and
// waits until it is ready. It is killed at cleanup if still running.
func (e *Env) SpawnAPI(tb testing.TB, bin, addr string) *APIProcess {
	tb.Helper()
	p := &APIProcess{URL: "http://" + addr, Logs: &SyncBuffer{}, done: make(chan struct{})}
	natsURL := e.NATSURLAs("api")
	if e.opts.APINATS != nil {
		natsURL = natsserver.URL(e.opts.APINATS(e.natsAddr), "api", e.passwords["api"])
	}
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(os.Environ(),
		"VAULT_HTTP_ADDR="+addr, "VAULT_NATS_URL="+natsURL, "VAULT_STREAM="+e.Stream,
		"VAULT_READMODEL_PATH="+e.ReadModel, "VAULT_DATA_DIR="+tb.TempDir(),
		"VAULT_API_KEYS=acct_a:"+KeyA+",acct_b:"+KeyB, "VAULT_MASTER_KEYS="+e.KeySpec,
		"VAULT_RATE_LIMIT=0", "VAULT_LOG_LEVEL=warn",
		"VAULT_ALLOW_PRIVATE_UPSTREAMS="+map[bool]string{true: "true", false: "false"}[e.opts.AllowPrivate])
	p.cmd.Stdout, p.cmd.Stderr = p.Logs, p.Logs
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			tb.Fatalf("the API process exited before it was ready:\n%s", p.Logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the API process was not ready within 30 s:\n%s", p.Logs.String())
		}
	}
}

// Kill sends SIGKILL and waits until the process is gone, failing the test
// unless it died of that signal.
func (p *APIProcess) Kill(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	<-p.done
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		tb.Fatalf("the API process did not die of SIGKILL: %v\n%s", p.cmd.ProcessState, p.Logs.String())
	}
}

// Do sends r to the process (a transport error fails the test).
func (p *APIProcess) Do(tb testing.TB, r Request) Response {
	tb.Helper()
	return DoAt(tb, p.URL, r)
}
