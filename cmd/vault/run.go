package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcpvault/vault/cmd/internal/config"
	"github.com/mcpvault/vault/internal/natsserver"
)

func run() error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log := cfg.Logger("vault")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var env []string
	for _, kv := range os.Environ() {
		// The children find their NATS identity in the data dir.
		if !strings.HasPrefix(kv, "VAULT_NATS_URL=") {
			env = append(env, kv)
		}
	}
	if cfg.Embedded {
		natsserver.TuneGC()
		credDir := cfg.CredentialsDir()
		pw, err := natsserver.LoadOrCreatePasswords(credDir)
		if err != nil {
			return err
		}
		opts := natsserver.Options{Listen: cfg.NATSListen, StoreDir: filepath.Join(cfg.DataDir, "jetstream"),
			SyncAlways: cfg.NATSSync == "always", Stream: cfg.Stream, Passwords: pw}
		if !opts.SyncAlways {
			opts.SyncInterval, _ = time.ParseDuration(cfg.NATSSync)
		}
		ns, err := natsserver.Start(opts)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			log.Info("embedded NATS stopped")
		}()
		if err := natsserver.WriteURLs(credDir, []string{ns.Addr().String()}, pw); err != nil {
			return err
		}
		log.Info("embedded NATS JetStream running (anonymous clients refused)", "addr", ns.Addr().String(),
			"store", opts.StoreDir, "sync", cfg.NATSSync, "credentials", credDir)
		log.Info(fmt.Sprintf("follow the audit events: nats --server \"$(cat %s/audit.url)\" sub 'vault.>'", credDir))
	} else {
		env = append(env, "VAULT_NATS_URL="+cfg.NATSURL)
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
		// Own process group (a Ctrl-C reaches only vault run, which stops
		// the children in order, so NATS outlives them), and SIGTERM from
		// the kernel should vault run die, even by SIGKILL.
		cmd.SysProcAttr = childAttr()
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
