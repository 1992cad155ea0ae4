package main

import (
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

	"github.com/nats-io/nats.go"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds bin/api, bin/projector and bin/vault once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "vault-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/api", "./cmd/projector", "./cmd/vault")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			binDir = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, binDir)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" && buildErr == nil {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

type vaultRun struct {
	cmd              *exec.Cmd
	httpAddr, natsAd string
	dir              string
	out              *strings.Builder
}

func startVaultRun(t *testing.T, dir, httpAddr, natsAddr string) *vaultRun {
	t.Helper()
	bin := binaries(t)
	var out strings.Builder
	cmd := exec.Command(filepath.Join(bin, "vault"), "run")
	cmd.Env = cleanEnv("VAULT_DATA_DIR="+dir, "VAULT_HTTP_ADDR="+httpAddr, "VAULT_NATS_LISTEN="+natsAddr, "VAULT_NATS_SYNC=2m")
	cmd.Stdout, cmd.Stderr = &lockedWriter{b: &out}, &lockedWriter{b: &out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v := &vaultRun{cmd: cmd, httpAddr: httpAddr, natsAd: natsAddr, dir: dir, out: &out}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return v
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault run not ready within 60s:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func portFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// TestSIGKILLOfVaultRunFreesItsPorts: the api and projector die with vault
// run even when it is SIGKILLed (parent-death signal), so the ports are free
// within 2 s and the next `vault run` starts cleanly.
func TestSIGKILLOfVaultRunFreesItsPorts(t *testing.T) {
	dir := t.TempDir()
	httpAddr, natsAddr := freeAddr(t), freeAddr(t)
	v := startVaultRun(t, dir, httpAddr, natsAddr)

	// The credentials files: one URL per role, 0600; audit can connect.
	for _, role := range []string{"api", "projector", "audit"} {
		fi, err := os.Stat(filepath.Join(dir, "nats-credentials", role+".url"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s.url has mode %v, want 0600", role, fi.Mode().Perm())
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "nats-credentials", "audit.url"))
	nc, err := nats.Connect(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("audit.url does not connect: %v", err)
	}
	nc.Close()
	if nc, err := nats.Connect("nats://"+natsAddr, nats.Timeout(time.Second)); err == nil {
		nc.Close()
		t.Fatal("the embedded server accepted an anonymous client")
	}

	if err := v.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	v.cmd.Wait()
	killed := time.Now()
	for !(portFree(httpAddr) && portFree(natsAddr)) {
		if time.Since(killed) > 2*time.Second {
			t.Fatalf("ports still taken 2s after SIGKILL of vault run:\n%s", v.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("ports free %s after SIGKILL", time.Since(killed).Round(time.Millisecond))

	// The next run starts cleanly on the same ports and data, with the same
	// passwords, and stops cleanly on SIGTERM.
	before, _ := os.ReadFile(filepath.Join(dir, "nats-credentials", "api.url"))
	v2 := startVaultRun(t, dir, httpAddr, natsAddr)
	after, _ := os.ReadFile(filepath.Join(dir, "nats-credentials", "api.url"))
	if string(before) != string(after) {
		t.Fatal("the api password changed across restarts")
	}
	v2.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- v2.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("vault run after SIGTERM: %v\n%s", err, v2.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("vault run did not stop within 10s of SIGTERM")
	}
}

func TestHelpOnEveryBinary(t *testing.T) {
	bin := binaries(t)
	for _, c := range [][]string{{"api", "--help"}, {"api", "-h"}, {"projector", "--help"}, {"projector", "rebuild", "--help"},
		{"vault", "--help"}, {"vault", "run", "--help"}, {"vault", "cluster", "--help"}, {"vault", "nats-config", "--help"}} {
		cmd := exec.Command(filepath.Join(bin, c[0]), c[1:]...)
		cmd.Env = cleanEnv("VAULT_DATA_DIR=" + t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%v: %v\n%s", c, err, out)
			continue
		}
		if !strings.Contains(string(out), "usage:") {
			t.Errorf("%v printed no usage:\n%s", c, out)
		}
	}
}

func TestRebuildWithoutNATSFailsFast(t *testing.T) {
	bin := binaries(t)
	dir := t.TempDir()
	for _, env := range [][]string{
		{"VAULT_NATS_URL=nats://" + freeAddr(t)}, // an operator's NATS that is down
		{"VAULT_NATS_LISTEN=" + freeAddr(t)},     // no vault run ever started here
	} {
		cmd := exec.Command(filepath.Join(bin, "projector"), "rebuild")
		cmd.Env = cleanEnv(append(env, "VAULT_DATA_DIR="+dir)...)
		start := time.Now()
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: rebuild still running after 10s", env)
		}
		if err == nil {
			t.Fatalf("%v: rebuild succeeded without NATS:\n%s", env, out)
		}
		if !strings.Contains(string(out), "NATS") {
			t.Fatalf("%v: unclear message: %s", env, out)
		}
		t.Logf("%v: failed in %s: %s", env, time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
	}
}

func TestAPIRefusesOperatorNATSWithoutKeys(t *testing.T) {
	bin := binaries(t)
	cmd := exec.Command(filepath.Join(bin, "api"))
	cmd.Env = cleanEnv("VAULT_DATA_DIR="+t.TempDir(), "VAULT_NATS_URL=nats://"+freeAddr(t), "VAULT_HTTP_ADDR="+freeAddr(t))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "VAULT_API_KEYS and VAULT_MASTER_KEYS must be set") {
		t.Fatalf("api started against an operator's NATS without keys (%v):\n%s", err, out)
	}
}
