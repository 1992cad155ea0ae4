// Command api serves the MCP Vault HTTP API. See OPERATIONS.md for its
// environment; it needs a NATS JetStream server (VAULT_NATS_URL, or the one
// `vault run` embeds) and shares the read model file with the projector.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/cmd/internal/config"
	"github.com/mcpvault/vault/internal/gogc"
	"github.com/mcpvault/vault/service"
)

const usage = `usage: api

Serves the MCP Vault HTTP API. It takes no arguments: everything comes from the environment
(README.md "Configuration"), chiefly VAULT_HTTP_ADDR, VAULT_NATS_URL with VAULT_NATS_USER and
VAULT_NATS_PASSWORD (the NATS user api), VAULT_NATS_TLS_CA/_CERT/_KEY, VAULT_READMODEL_PATH,
VAULT_API_KEYS and VAULT_MASTER_KEYS. With VAULT_NATS_URL set, VAULT_API_KEYS and
VAULT_MASTER_KEYS are required; without it the api joins the embedded server of "vault run".
`

// gcPercent is the API's GC target unless GOGC is set.
const gcPercent = 400

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-h", "--help", "-help", "help":
			fmt.Print(usage)
			return
		default:
			fmt.Fprintf(os.Stderr, "api: unexpected argument %q\n%s", os.Args[1], usage)
			os.Exit(2)
		}
	}
	// The API's live heap is small (~14 MB under the bench's reads), and at
	// Go's default it was marked every ~0.4 s over them; the reads caught
	// in a mark make the p99 at light load (docs/benchmarks.md,
	// "Runs of 2026-11-30 17:07–18:15 UTC"). A quarter as many marks cost
	// some 50 MB more heap.
	gogc.SetDefault(gcPercent)
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log := cfg.Logger("api")
	if err := cfg.RequireKeys(); err != nil {
		return err
	}
	natsURL, natsAuth, err := cfg.NATS("api")
	if err != nil {
		return err
	}
	keys, devKey, err := cfg.APIKeys()
	if err != nil {
		return err
	}
	if devKey {
		// The generated dev key is printed once per start so a newcomer can
		// use it; keys from VAULT_API_KEYS are never printed or logged.
		fmt.Printf("\n  MCP Vault dev API key (from %s/dev-api-keys):\n    %s\n\n", cfg.DataDir, keys[0].Key)
	}
	kr, devMaster, err := cfg.MasterKeys()
	if err != nil {
		return err
	}
	if devMaster {
		log.Warn("using a generated development master key from the data dir; set VAULT_MASTER_KEYS in production")
	}
	akr, devAudit, err := cfg.AuditKeys()
	if err != nil {
		return err
	}
	if devAudit {
		log.Warn("signing events with a generated development audit key from the data dir; set VAULT_AUDIT_KEYS in production")
	}
	lead, interval, err := cfg.Expiry()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	api := &service.API{
		HTTPAddr: cfg.HTTPAddr, NATSURL: natsURL, NATSAuth: natsAuth, Stream: cfg.Stream, Replicas: cfg.Replicas, ReadModelPath: cfg.ReadModelPath,
		Keys: keys, MasterKeys: kr, AllowPrivate: cfg.AllowPrivate, RateLimit: cfg.RateLimit, GroupCommit: cfg.GroupCommit, KeyPool: apiKeyPool(cfg.KeyPool), KeyPoolAtomic: cfg.KeyPoolAtomic, Log: log,
		MetricsAddr: cfg.MetricsAddr,
		Limits:      app.Limits{ServersPerOwner: cfg.MaxServersPerOwner, CredentialsPerServer: cfg.MaxCredentialsPerServer},
	}
	api.AuditKeys = akr
	if api.UnsignedUntil, err = cfg.UnsignedUntil(); err != nil {
		return err
	}
	api.Expiry = service.Expiry{Lead: lead, Interval: interval, Holder: fmt.Sprintf("%s/%d", host, os.Getpid())}
	return api.Run(ctx)
}

// apiKeyPool maps VAULT_KEY_POOL (0 = off) to service.API.KeyPool (0 = the
// default, negative = off).
func apiKeyPool(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
