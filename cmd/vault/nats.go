package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mcpvault/vault/deploy"
	"github.com/mcpvault/vault/internal/natsserver"
)

// natsNode runs one nats-server from a config file until SIGINT or SIGTERM
// (then it shuts down gracefully, stepping down from any leadership). bin/vault
// already links nats-server for the embedded server, so the cluster harness
// spawns it instead of building a separate nats-server binary: the nodes run
// the exact server version of go.mod, and each is a real process that a test
// can SIGKILL.
func natsNode(args []string) error {
	fs := flag.NewFlagSet("vault nats-node", flag.ContinueOnError)
	conf := fs.String("config", "", "the node's config file (rendered by vault nats-config)")
	logs := fs.Bool("log", true, "log to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *conf == "" {
		return fmt.Errorf("nats-node: --config is required")
	}
	natsserver.TuneGC()
	s, err := natsserver.StartConfigFile(*conf, *logs)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// natsConfig prints a node config rendered from deploy/nats/nats-server.conf.tmpl.
func natsConfig(args []string) error {
	fs := flag.NewFlagSet("vault nats-config", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: vault nats-config [flags] > nats-server.conf

Prints the NATS JetStream config of one node of the vault's NATS (users api, projector and audit
with least-privilege permissions, sync_interval always), rendered from
deploy/nats/nats-server.conf.tmpl. Run it once per node with that node's --name, addresses and
store; the passwords file and the TLS files are the same for every node.

The passwords file holds one line per user, "api=…", "projector=…", "audit=…" and "route=…"
(route: the password the nodes' routes authenticate with). Values may be bcrypt hashes
("$2a$…", e.g. from "nats server passwd") except route. Missing lines are generated and
appended to the file (mode 0600): keep it, every node needs the same one, and each vault
process gets its own user's password (VAULT_NATS_USER/VAULT_NATS_PASSWORD).

Flags:
`)
		fs.PrintDefaults()
	}
	name := fs.String("name", "vault-nats-1", "server_name of this node (unique in the cluster)")
	listen := fs.String("listen", "0.0.0.0:4222", "client address")
	store := fs.String("store", "/var/lib/nats/jetstream", "JetStream store directory")
	stream := fs.String("stream", "VAULT", "VAULT_STREAM of the vault")
	clusterListen := fs.String("cluster-listen", "0.0.0.0:6222", "route address (with --routes)")
	routes := fs.String("routes", "", "comma-separated host:port of every node's routes; empty = a single server")
	clusterName := fs.String("cluster-name", "vault", "cluster name")
	pwFile := fs.String("passwords", "", "passwords file (required; see above)")
	tlsCert := fs.String("tls-cert", "", "this node's certificate (PEM); with --tls-key and --tls-ca enables TLS for clients and routes")
	tlsKey := fs.String("tls-key", "", "this node's key (PEM)")
	tlsCA := fs.String("tls-ca", "", "the CA that signs clients and nodes (PEM)")
	authOnly := fs.Bool("auth-only", false, "print only the users block (e.g. for the NATS Helm chart, see deploy/k8s)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pwFile == "" {
		fs.Usage()
		return fmt.Errorf("nats-config: --passwords is required")
	}
	pw, err := loadPasswords(*pwFile)
	if err != nil {
		return err
	}
	node := deploy.NATSNode{ServerName: *name, Listen: *listen, StoreDir: *store, Stream: *stream, Passwords: pw, AuthOnly: *authOnly}
	if *tlsCert != "" || *tlsKey != "" || *tlsCA != "" {
		if *tlsCert == "" || *tlsKey == "" || *tlsCA == "" {
			return fmt.Errorf("nats-config: TLS needs --tls-cert, --tls-key and --tls-ca")
		}
		node.TLS = &deploy.TLS{Cert: *tlsCert, Key: *tlsKey, CA: *tlsCA}
	}
	if *routes != "" {
		node.Cluster = &deploy.Cluster{Name: *clusterName, Listen: *clusterListen, Routes: strings.Split(*routes, ","), Password: pw["route"]}
	}
	out, err := deploy.RenderNATS(node)
	if err != nil {
		return err
	}
	fmt.Print(out)
	return nil
}

// loadPasswords reads name=password lines, generating (and appending) the
// missing ones.
func loadPasswords(path string) (map[string]string, error) {
	pw := map[string]string{}
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k != "" && !strings.HasPrefix(k, "#") {
			pw[k] = v
		}
	}
	var add strings.Builder
	for _, r := range append(append([]string(nil), deploy.Roles...), "route") {
		if pw[r] == "" {
			pw[r] = natsserver.NewPassword()
			fmt.Fprintf(&add, "%s=%s\n", r, pw[r])
		}
	}
	if add.Len() > 0 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		if _, err := f.WriteString(add.String()); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
	}
	return pw, nil
}
