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

const usage = `usage: projector [rebuild]

Consumes the MCP Vault event stream and keeps the SQLite read model (VAULT_READMODEL_PATH).
  (no argument)  follow the stream for ever
  rebuild        replay the whole stream into a new file while the old one keeps serving, then swap
                 it in atomically; fails within seconds when NATS cannot be reached

Environment (README.md "Configuration"): VAULT_NATS_URL with VAULT_NATS_USER and
VAULT_NATS_PASSWORD (the NATS user projector), VAULT_NATS_TLS_CA/_CERT/_KEY, VAULT_STREAM,
VAULT_READMODEL_PATH; without VAULT_NATS_URL it joins the embedded server of "vault run".
`

func main() {
	for _, a := range os.Args[1:] {
		if a == "-h" || a == "--help" || a == "-help" || a == "help" {
			fmt.Print(usage)
			return
		}
	}
	if len(os.Args) > 2 || (len(os.Args) == 2 && os.Args[1] != "rebuild") {
		fmt.Fprintf(os.Stderr, "projector: unexpected arguments %q\n%s", os.Args[1:], usage)
		os.Exit(2)
	}
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
	natsURL, natsAuth, err := cfg.NATS("projector")
	if err != nil {
		return err
	}
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
		return (&service.Rebuild{NATSURL: natsURL, NATSAuth: natsAuth, Stream: cfg.Stream, Replicas: cfg.Replicas, ReadModelPath: cfg.ReadModelPath,
			Log: log, Progress: os.Stderr, AuditKeys: keys, UnsignedUntil: unsignedUntil}).Run(ctx)
	}
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q (want no argument, or rebuild)", args[0])
	}
	p := &service.Projector{NATSURL: natsURL, NATSAuth: natsAuth, Stream: cfg.Stream, Replicas: cfg.Replicas, ReadModelPath: cfg.ReadModelPath, Log: log}
	p.AuditKeys, p.UnsignedUntil = keys, unsignedUntil
	return p.Run(ctx)
}
