package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/internal/cluster"
	"github.com/mcpvault/vault/internal/natsserver"
	"github.com/mcpvault/vault/seal"
)

// clusterCmd runs `make cluster`: three NATS nodes (configs from the deploy
// template, users of every role, sync_interval always) and two vault
// replicas, each an API and a projector with its own read model, in the
// foreground until SIGINT or SIGTERM. Passwords and dev keys are generated
// once under $VAULT_DATA_DIR/cluster; the JetStream stores are kept there
// across runs.
func clusterCmd(args []string) error {
	fset := flag.NewFlagSet("vault cluster", flag.ContinueOnError)
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), `usage: vault cluster

Runs a three-node NATS JetStream cluster on loopback and two vault replicas (API + projector + own
read model each) in the foreground and prints their addresses; Ctrl-C stops everything. State,
generated passwords and dev keys live under $VAULT_DATA_DIR/cluster (default ./data/cluster).
`)
	}
	if err := fset.Parse(args); err != nil {
		return err
	}
	dataDir := os.Getenv("VAULT_DATA_DIR")
	if dataDir == "" {
		dataDir = "./data"
	}
	dir, err := filepath.Abs(filepath.Join(dataDir, "cluster"))
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	stream := os.Getenv("VAULT_STREAM")
	if stream == "" {
		stream = "VAULT"
	}
	credDir := filepath.Join(dir, "nats-credentials")
	pw, err := natsserver.LoadOrCreatePasswords(credDir)
	if err != nil {
		return err
	}
	route, err := readOrCreate(filepath.Join(dir, "route-password"), natsserver.NewPassword)
	if err != nil {
		return err
	}
	apiKey, err := readOrCreate(filepath.Join(dir, "dev-api-keys"), func() string {
		b := make([]byte, 24)
		rand.Read(b)
		return "dev:sk-vault-dev-" + hex.EncodeToString(b)
	})
	if err != nil {
		return err
	}
	master, err := readOrCreate(filepath.Join(dir, "dev-master-keys"), func() string { return seal.NewKeySpec("dev1") })
	if err != nil {
		return err
	}
	// One audit keyring for both replicas: each projector verifies what
	// either API signed.
	auditKeys, err := readOrCreate(filepath.Join(dir, "dev-audit-keys"), func() string { return audit.NewKeySpec("audit-dev1") })
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logs := os.Stderr
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	natsLog, err := os.OpenFile(filepath.Join(dir, "nats.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer natsLog.Close()
	nodes, err := cluster.StartNodes(cluster.NodeOptions{Dir: dir, Vault: self, Stream: stream, Passwords: pw, RoutePassword: route, Out: natsLog})
	if err != nil {
		return err
	}
	defer nodes.Stop()
	if err := natsserver.WriteURLs(credDir, nodes.Addrs(), pw); err != nil {
		return err
	}
	var replicas []*cluster.Replica
	defer func() {
		for _, r := range replicas {
			r.Stop()
		}
	}()
	for _, name := range []string{"a", "b"} {
		r, err := cluster.NewReplica(cluster.ReplicaOptions{Name: "replica-" + name, Dir: filepath.Join(dir, "replica-"+name),
			BinDir: filepath.Dir(self), Nodes: nodes, APIKeys: apiKey, MasterKeys: master, AuditKeys: auditKeys, Out: logs,
			Env: passThrough("VAULT_LOG_LEVEL", "VAULT_ALLOW_PRIVATE_UPSTREAMS", "VAULT_RATE_LIMIT")})
		if err != nil {
			return err
		}
		if err := r.Start(); err != nil {
			return err
		}
		replicas = append(replicas, r)
	}
	for _, r := range replicas {
		if err := r.WaitReady(ctx, 90*time.Second); err != nil {
			return err
		}
	}
	_, key, _ := strings.Cut(apiKey, ":")
	var b strings.Builder
	fmt.Fprintf(&b, "\n  MCP Vault cluster: 3 NATS nodes, 2 replicas (Ctrl-C stops everything)\n")
	for _, n := range nodes.List {
		fmt.Fprintf(&b, "    NATS %s  %s\n", n.ServerName, n.ClientAddr)
	}
	for _, r := range replicas {
		fmt.Fprintf(&b, "    %s  %s\n", r.Name, r.HTTPAddr)
	}
	fmt.Fprintf(&b, "  NATS logs: %s/nats.log\n", dir)
	fmt.Fprintf(&b, "  dev API key (from %s/dev-api-keys):\n    %s\n", dir, key)
	fmt.Fprintf(&b, "  audit events: nats --server \"$(cat %s/audit.url)\" sub 'vault.>'\n\n", credDir)
	fmt.Print(b.String())

	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "vault cluster: stopping")
			return nil
		case <-time.After(500 * time.Millisecond):
		}
		for _, r := range replicas {
			for _, p := range []*cluster.Proc{r.API, r.Projector} {
				if !p.Running() {
					return fmt.Errorf("%s exited", p.Name)
				}
			}
		}
		for _, n := range nodes.List {
			if !n.Running() {
				return fmt.Errorf("%s exited", n.ServerName)
			}
		}
	}
}

func passThrough(names ...string) []string {
	var env []string
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok {
			env = append(env, n+"="+v)
		}
	}
	return env
}

// readOrCreate reads a 0600 file, creating it with gen() the first time.
func readOrCreate(path string, gen func() string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	v := gen()
	return v, os.WriteFile(path, []byte(v+"\n"), 0o600)
}
