package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/deploy"
	"github.com/mcpvault/vault/internal/natsserver"
)

// NodeOptions configure a NATS JetStream cluster on loopback.
type NodeOptions struct {
	Dir   string // each node keeps its config and store under Dir/<name>
	Vault string // path of bin/vault, which runs a node as `vault nats-node --config <file>`
	Nodes int    // default 3
	// Stream is the vault's event stream name (the users' permissions name it).
	Stream string
	// Passwords of the users api, projector and audit; RoutePassword of the
	// route user. Empty ones are generated.
	Passwords     map[string]string
	RoutePassword string
	// Out receives the nodes' logs (nil = discard).
	Out io.Writer
}

// Nodes is a running NATS cluster.
type Nodes struct {
	List      []*Node
	Stream    string
	Passwords map[string]string
}

// Node is one nats-server process.
type Node struct {
	*Proc
	ServerName string
	ClientAddr string // 127.0.0.1:port
	RouteAddr  string
	ConfigPath string
}

// StartNodes renders one config per node from the deploy template (users,
// permissions, sync_interval always, routes to every node) and starts the
// nodes.
func StartNodes(o NodeOptions) (*Nodes, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Stream == "" {
		o.Stream = "VAULT"
	}
	pw := map[string]string{}
	for _, r := range deploy.Roles {
		pw[r] = o.Passwords[r]
		if pw[r] == "" {
			pw[r] = natsserver.NewPassword()
		}
	}
	if o.RoutePassword == "" {
		o.RoutePassword = natsserver.NewPassword()
	}
	ns := &Nodes{Stream: o.Stream, Passwords: pw}
	var routes []string
	for i := range o.Nodes {
		client, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		route, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("vault-nats-%d", i+1)
		ns.List = append(ns.List, &Node{ServerName: name, ClientAddr: client, RouteAddr: route,
			ConfigPath: filepath.Join(o.Dir, name, "nats-server.conf")})
		routes = append(routes, route)
	}
	for _, n := range ns.List {
		dir := filepath.Dir(n.ConfigPath)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		conf, err := deploy.RenderNATS(deploy.NATSNode{ServerName: n.ServerName, Listen: n.ClientAddr,
			StoreDir: filepath.Join(dir, "jetstream"), Stream: o.Stream, Passwords: pw,
			Cluster: &deploy.Cluster{Name: "vault", Listen: n.RouteAddr, Routes: routes, Password: o.RoutePassword}})
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(n.ConfigPath, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		n.Proc = &Proc{Name: n.ServerName, Path: o.Vault, Args: []string{"nats-node", "--config", n.ConfigPath}, Env: os.Environ(), Out: o.Out}
	}
	for _, n := range ns.List {
		if err := n.Start(); err != nil {
			ns.Stop()
			return nil, err
		}
	}
	for _, n := range ns.List {
		if err := n.WaitListening(30 * time.Second); err != nil {
			ns.Stop()
			return nil, err
		}
	}
	return ns, nil
}

// WaitListening waits until the node accepts client connections.
func (n *Node) WaitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", n.ClientAddr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if !n.Running() {
			return fmt.Errorf("%s exited", n.ServerName)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not listen on %s: %w", n.ServerName, n.ClientAddr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URLs is the comma-separated client URLs of every node as role.
func (ns *Nodes) URLs(role string) string {
	var urls []string
	for _, n := range ns.List {
		urls = append(urls, natsserver.URL(n.ClientAddr, role, ns.Passwords[role]))
	}
	return strings.Join(urls, ",")
}

// Addrs is the client address of every node.
func (ns *Nodes) Addrs() []string {
	var a []string
	for _, n := range ns.List {
		a = append(a, n.ClientAddr)
	}
	return a
}

// Node returns the node named name (nil if none).
func (ns *Nodes) Node(name string) *Node {
	for _, n := range ns.List {
		if n.ServerName == name {
			return n
		}
	}
	return nil
}

// Leader asks the cluster (as the api user) which node leads stream.
func (ns *Nodes) Leader(ctx context.Context, stream string) (*Node, error) {
	nc, err := nats.Connect(ns.URLs("api"), nats.CustomInboxPrefix("_INBOX_api"), nats.Timeout(time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	for {
		s, err := js.Stream(ctx, stream)
		if err == nil {
			info := s.CachedInfo()
			if info.Cluster != nil && info.Cluster.Leader != "" {
				if n := ns.Node(info.Cluster.Leader); n != nil {
					return n, nil
				}
				return nil, fmt.Errorf("leader %q is not a node of this cluster", info.Cluster.Leader)
			}
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops every node gracefully.
func (ns *Nodes) Stop() {
	for _, n := range ns.List {
		if n.Proc != nil {
			n.Stop(10 * time.Second)
		}
	}
}
