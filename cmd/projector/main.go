// Command projector consumes the MCP Vault event stream and keeps the SQLite
// read model. `projector rebuild` rebuilds the read model into a new file
// while the old one keeps serving, then swaps it in atomically.
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
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "projector:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log := cfg.Logger("projector")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	keys, err := cfg.ProjectorAuditKeys()
	if err != nil {
		return err
	}
	unsignedUntil, err := cfg.UnsignedUntil()
	if err != nil {
		return err
	}
	if len(args) > 0 && args[0] == "rebuild" {
		return (&service.Rebuild{NATSURL: cfg.NATSURL, Stream: cfg.Stream, Replicas: cfg.Replicas, ReadModelPath: cfg.ReadModelPath,
			Log: log, Progress: os.Stderr, AuditKeys: keys, UnsignedUntil: unsignedUntil}).Run(ctx)
	}
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q (want no argument, or rebuild)", args[0])
	}
	p := &service.Projector{NATSURL: cfg.NATSURL, Stream: cfg.Stream, Replicas: cfg.Replicas, ReadModelPath: cfg.ReadModelPath, Log: log}
	p.AuditKeys, p.UnsignedUntil = keys, unsignedUntil
	return p.Run(ctx)
}
