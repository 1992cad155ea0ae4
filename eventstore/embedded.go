package eventstore

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure the single-machine JetStream server.
type EmbeddedOptions struct {
	// Listen is host:port; port 0 picks a free one (tests).
	Listen string
	// StoreDir is where JetStream keeps its files.
	StoreDir string
	// SyncAlways fsyncs every write before it is acknowledged. A 201 from a
	// secret store must survive a power cut, so make run sets it.
	SyncAlways bool
	// SyncInterval is the fsync interval when SyncAlways is off (0 = the
	// server default, 2 minutes).
	SyncInterval time.Duration
}

// StartEmbedded starts an in-process NATS server with JetStream (file storage)
// and waits until it accepts connections.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("eventstore: listen address %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("eventstore: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "vault-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	if o.SyncAlways {
		opts.SyncAlways = true
		opts.SyncInterval = 2 * time.Minute
	} else if o.SyncInterval > 0 {
		opts.SyncInterval = o.SyncInterval
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("eventstore: embedded server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("eventstore: embedded server did not start on %s", o.Listen)
	}
	return s, nil
}
