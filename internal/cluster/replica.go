package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ReplicaOptions configure one vault replica: an API and a projector with
// their own read model, on a NATS cluster.
type ReplicaOptions struct {
	Name       string
	Dir        string // the replica's VAULT_DATA_DIR (its read model)
	BinDir     string // holds the api and projector binaries
	Nodes      *Nodes
	APIKeys    string // VAULT_API_KEYS
	MasterKeys string // VAULT_MASTER_KEYS (the same on every replica)
	// AuditKeys is VAULT_AUDIT_KEYS, the same on every replica: each
	// replica's projector verifies the events every other API signs.
	AuditKeys string
	HTTPAddr  string // default: a free loopback port
	Env       []string
	Out       io.Writer
}

// Replica is an API and a projector sharing a read model.
type Replica struct {
	Name      string
	HTTPAddr  string
	URL       string // http://HTTPAddr
	ReadModel string
	API       *Proc
	Projector *Proc
}

// NewReplica prepares a replica (Start starts it).
func NewReplica(o ReplicaOptions) (*Replica, error) {
	if o.HTTPAddr == "" {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		o.HTTPAddr = addr
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			base = append(base, kv)
		}
	}
	base = append(base,
		"VAULT_DATA_DIR="+o.Dir,
		"VAULT_HTTP_ADDR="+o.HTTPAddr,
		"VAULT_NATS_REPLICAS=3",
		"VAULT_STREAM="+o.Nodes.Stream,
		"VAULT_API_KEYS="+o.APIKeys,
		"VAULT_MASTER_KEYS="+o.MasterKeys,
	)
	if o.AuditKeys != "" {
		base = append(base, "VAULT_AUDIT_KEYS="+o.AuditKeys)
	}
	base = append(base, o.Env...)
	env := func(role string) []string {
		return append(append([]string(nil), base...),
			"VAULT_NATS_URL="+strings.Join(urls(o.Nodes), ","),
			"VAULT_NATS_USER="+role, "VAULT_NATS_PASSWORD="+o.Nodes.Passwords[role])
	}
	r := &Replica{Name: o.Name, HTTPAddr: o.HTTPAddr, URL: "http://" + o.HTTPAddr,
		ReadModel: filepath.Join(o.Dir, "readmodel.sqlite")}
	r.API = &Proc{Name: o.Name + "-api", Path: filepath.Join(o.BinDir, "api"), Env: env("api"), Out: o.Out}
	r.Projector = &Proc{Name: o.Name + "-projector", Path: filepath.Join(o.BinDir, "projector"), Env: env("projector"), Out: o.Out}
	return r, nil
}

func urls(ns *Nodes) []string {
	var u []string
	for _, a := range ns.Addrs() {
		u = append(u, "nats://"+a)
	}
	return u
}

// Start starts the projector and the API.
func (r *Replica) Start() error {
	if err := r.Projector.Start(); err != nil {
		return err
	}
	return r.API.Start()
}

// Stop stops the API and the projector gracefully.
func (r *Replica) Stop() {
	r.API.Stop(10 * time.Second)
	r.Projector.Stop(10 * time.Second)
}

// WaitReady polls /readyz until it answers 200.
func (r *Replica) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &http.Client{Timeout: 3 * time.Second}
	for {
		resp, err := c.Get(r.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !r.API.Running() {
			return fmt.Errorf("%s exited", r.API.Name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s (last: %v)", r.Name, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
