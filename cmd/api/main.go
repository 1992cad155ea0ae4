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

	"github.com/mcpvault/vault/cmd/internal/config"
	"github.com/mcpvault/vault/service"
)

func main() {
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	api := &service.API{
		HTTPAddr: cfg.HTTPAddr, NATSURL: cfg.NATSURL, Stream: cfg.Stream, Replicas: cfg.Replicas, ReadModelPath: cfg.ReadModelPath,
		Keys: keys, MasterKeys: kr, AllowPrivate: cfg.AllowPrivate, RateLimit: cfg.RateLimit, GroupCommit: cfg.GroupCommit, Log: log,
	}
	return api.Run(ctx)
}
