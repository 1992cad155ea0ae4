// Package natsserver runs nats-server inside a vault process: the embedded
// JetStream server of `vault run`, the nodes of `vault cluster` and of the
// cluster tests (`vault nats-node`), and in-process servers for tests. Its
// config is rendered from the deploy template, with one NATS user per role.
//
// Only bin/vault and tests import this package: bin/api and bin/projector do
// not link nats-server.
package natsserver

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mcpvault/vault/deploy"
)

// Options configure an in-process JetStream server.
type Options struct {
	// Name is the server name (default vault-embedded).
	Name string
	// Listen is host:port; port 0 picks a free one (tests).
	Listen string
	// StoreDir is where JetStream keeps its files.
	StoreDir string
	// SyncAlways fsyncs every write before it is acknowledged. A 201 from a
	// secret store must survive a power cut, so `vault run` sets it.
	SyncAlways bool
	// SyncInterval is the fsync interval when SyncAlways is off (0 = the
	// server default, 2 minutes).
	SyncInterval time.Duration
	// Stream is the vault's event stream name (default VAULT); the users'
	// permissions name it.
	Stream string
	// Passwords of the users api, projector and audit. Nil runs the server
	// without authentication, which only tests of other layers do.
	Passwords map[string]string
	// AdminPassword, when set with Passwords, adds a user "admin" with every
	// permission, for tests that inspect the raw streams. Never in production.
	AdminPassword string
}

// Start starts an in-process NATS server with JetStream (file storage) and
// waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("natsserver: listen address %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("natsserver: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if o.Name == "" {
		o.Name = "vault-embedded"
	}
	opts := &server.Options{}
	if o.Passwords != nil {
		sync := "always"
		if !o.SyncAlways {
			sync = "2m"
			if o.SyncInterval > 0 {
				sync = o.SyncInterval.String()
			}
		}
		conf, err := deploy.RenderNATS(deploy.NATSNode{ServerName: o.Name, Listen: o.Listen, StoreDir: o.StoreDir,
			SyncInterval: sync, Stream: o.Stream, Passwords: o.Passwords})
		if err != nil {
			return nil, err
		}
		if err := opts.ProcessConfigString(conf); err != nil {
			return nil, fmt.Errorf("natsserver: config: %w", err)
		}
		if o.AdminPassword != "" {
			opts.Users = append(opts.Users, &server.User{Username: "admin", Password: o.AdminPassword})
		}
	} else {
		opts = &server.Options{ServerName: o.Name, JetStream: true, StoreDir: o.StoreDir, MaxPayload: 8 << 20}
		if o.SyncAlways {
			opts.SyncAlways = true
			opts.SyncInterval = 2 * time.Minute
		} else if o.SyncInterval > 0 {
			opts.SyncInterval = o.SyncInterval
		}
	}
	opts.Host, opts.Port = host, port
	opts.NoSigs, opts.NoLog = true, true
	return run(opts, o.Listen)
}

// StartConfigFile starts a server from a rendered config file (what
// `vault nats-node --config` runs) with logging to stderr when logs is set.
func StartConfigFile(path string, logs bool) (*server.Server, error) {
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	opts.NoSigs = true
	opts.NoLog = !logs
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	if logs {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("natsserver: server %s did not start", opts.ServerName)
	}
	return s, nil
}

func run(opts *server.Options, listen string) (*server.Server, error) {
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("natsserver: server did not start on %s", listen)
	}
	return s, nil
}
