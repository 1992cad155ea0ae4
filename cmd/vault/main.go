// Command vault runs the whole vault on one machine (`vault run`, what
// `make run` calls): an embedded NATS JetStream server under VAULT_DATA_DIR
// when VAULT_NATS_URL is unset, and the api and projector binaries beside it
// as separate processes, as in production. SIGINT or SIGTERM stops all of
// them cleanly.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/mcpvault/vault/cmd/internal/config"
	"github.com/mcpvault/vault/eventstore"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: vault run")
		os.Exit(2)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vault:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log := cfg.Logger("vault")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	env := os.Environ()
	if cfg.Embedded {
		opts := eventstore.EmbeddedOptions{Listen: cfg.NATSListen, StoreDir: filepath.Join(cfg.DataDir, "jetstream"),
			SyncAlways: cfg.NATSSync == "always"}
		if !opts.SyncAlways {
			opts.SyncInterval, _ = time.ParseDuration(cfg.NATSSync)
		}
		ns, err := eventstore.StartEmbedded(opts)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			log.Info("embedded NATS stopped")
		}()
		log.Info("embedded NATS JetStream running", "url", ns.ClientURL(), "store", opts.StoreDir, "sync", cfg.NATSSync)
		env = append(env, "VAULT_NATS_URL="+ns.ClientURL())
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := filepath.Dir(self)
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	var procs []*exec.Cmd
	for _, name := range []string{"projector", "api"} {
		cmd := exec.Command(filepath.Join(dir, name))
		cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, os.Stderr
		// Own process group: the supervisor decides when children stop, so
		// NATS outlives them.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			stopAll(procs)
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cmd.Wait(); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s exited: %w", name, err)
			} else if ctx.Err() == nil {
				errc <- fmt.Errorf("%s exited", name)
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case runErr = <-errc:
	}
	stopAll(procs)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(8 * time.Second):
		for _, p := range procs {
			p.Process.Kill()
		}
		<-done
		runErr = errors.Join(runErr, errors.New("children did not stop within 8s; killed"))
	}
	return runErr
}

func stopAll(procs []*exec.Cmd) {
	for _, p := range procs {
		p.Process.Signal(syscall.SIGTERM)
	}
}
